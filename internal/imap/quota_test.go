package imap

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// sizedBody returns a message of exactly n octets (n >= 40).
func sizedBody(tag string, n int) string {
	head := "Subject: " + tag + "\r\n\r\n"
	return head + strings.Repeat("q", n-len(head)-2) + "\r\n"
}

// appendLit sends APPEND with a non-synchronising literal (RFC 7888) and
// returns the responses.
func (c *conn) appendLit(tag, mailbox, body string) []string {
	c.t.Helper()
	c.write(tag + " APPEND " + mailbox + " {" + strconv.Itoa(len(body)) + "+}\r\n" + body + "\r\n")
	return c.until(tag)
}

func (c *conn) expectLines(what string, got []string, want ...string) {
	c.t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		c.t.Fatalf("%s:\ngot:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestQuota covers RFC 9208 end to end over a socket: GETQUOTAROOT and
// GETQUOTA with and without limits, STORAGE rounded up to KiB, SETQUOTA
// refused, APPEND and COPY refused with [OVERQUOTA] while MOVE is not,
// STATUS DELETED-STORAGE, and APPEND working again after EXPUNGE; limits
// changed by the administrator apply to the open session at once.
func TestQuota(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	setQuota := func(bytes, messages int64) {
		t.Helper()
		if err := e.store.SetQuota(ctx, testUser, bytes, messages); err != nil {
			t.Fatal(err)
		}
	}
	archive, err := e.store.Mailbox(ctx, e.account.ID, "Archive")
	if err != nil {
		t.Fatal(err)
	}
	uv, auv := strconv.FormatUint(uint64(e.inbox.UIDValidity), 10), strconv.FormatUint(uint64(archive.UIDValidity), 10)
	const full = "NO [OVERQUOTA] quota exceeded (mailbox is full)"

	c := e.login()
	// No limits: no quota root (RFC 9208 §4.1.2 lists the roots there are).
	c.exchange("a1", "GETQUOTAROOT INBOX", `* QUOTAROOT "INBOX"`, "a1 OK GETQUOTAROOT completed")
	c.exchange("a2", `GETQUOTA ""`, "a2 NO [NONEXISTENT] no such quota root")
	// Users may not set quotas; a malformed SETQUOTA is still BAD.
	c.exchange("a3", `SETQUOTA "" (STORAGE 100 MESSAGE 5)`, "a3 NO [NOPERM] quotas are set by the administrator")
	c.exchange("a4", `SETQUOTA "" ()`, "a4 NO [NOPERM] quotas are set by the administrator")
	c.exchange("a5", `SETQUOTA "" (STORAGE)`, "a5 BAD expected SP")
	c.exchange("a6", "GETQUOTAROOT Nonexistent", "a6 NO [NONEXISTENT] no such mailbox")

	// 3000 octets and 3 messages; 1500 octets in 2 messages used:
	// STORAGE 1500 -> 2 KiB (rounded up), 3000 -> 3 KiB.
	setQuota(3000, 3)
	e.deliver(sizedBody("one", 600))
	e.deliver(sizedBody("two", 900))
	c.exchange("b1", "GETQUOTAROOT inbox", `* QUOTAROOT "INBOX" ""`, `* QUOTA "" (STORAGE 2 3 MESSAGE 2 3)`, "b1 OK GETQUOTAROOT completed")
	c.exchange("b2", `GETQUOTA ""`, `* QUOTA "" (STORAGE 2 3 MESSAGE 2 3)`, "b2 OK GETQUOTA completed")
	c.exchange("b3", `GETQUOTA "INBOX"`, "b3 NO [NONEXISTENT] no such quota root")
	c.exchange("b4", "GETQUOTAROOT Archive", `* QUOTAROOT "Archive" ""`, `* QUOTA "" (STORAGE 2 3 MESSAGE 2 3)`, "b4 OK GETQUOTAROOT completed")

	// One octet too many is refused; exactly the limit is accepted. A
	// synchronising literal that cannot fit is refused before the client
	// sends it (no continuation request).
	c.expectLines("APPEND over quota", c.appendLit("c1", "INBOX", sizedBody("three", 1501)), "c1 "+full)
	c.send("c0 APPEND INBOX {1501}")
	c.expect("c0 " + full)
	c.expectLines("APPEND to the limit", c.appendLit("c2", "INBOX", sizedBody("three", 1500)), "c2 OK [APPENDUID "+uv+" 3] APPEND completed")
	c.exchange("c3", `GETQUOTA ""`, `* QUOTA "" (STORAGE 3 3 MESSAGE 3 3)`, "c3 OK GETQUOTA completed")
	if n := len(e.messages()); n != 3 {
		t.Fatalf("INBOX has %d messages, want 3", n)
	}

	// Selected: COPY would add, MOVE does not.
	if got := c.cmd("d1", "SELECT INBOX"); got[len(got)-1] != "d1 OK [READ-WRITE] SELECT completed" {
		t.Fatalf("SELECT: %q", got)
	}
	c.exchange("d2", "COPY 1 Archive", "d2 "+full)
	c.exchange("d3", "MOVE 1 Archive", "* OK [COPYUID "+auv+" 1 1] Moved", "* 1 EXPUNGE", "d3 OK MOVE completed")
	c.exchange("d4", `GETQUOTA ""`, `* QUOTA "" (STORAGE 3 3 MESSAGE 3 3)`, "d4 OK GETQUOTA completed")

	// STATUS DELETED-STORAGE (RFC 9208 §4.1.4): octets EXPUNGE reclaims.
	c.exchange("e1", `STORE 1 +FLAGS.SILENT (\Deleted)`, "e1 OK STORE completed")
	c.exchange("e2", "STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)",
		`* STATUS "INBOX" (MESSAGES 2 DELETED 1 DELETED-STORAGE 900)`, "e2 OK STATUS completed")
	c.exchange("e3", "STATUS Archive (DELETED-STORAGE SIZE)", `* STATUS "Archive" (DELETED-STORAGE 0 SIZE 600)`, "e3 OK STATUS completed")
	c.expectLines("APPEND when full", c.appendLit("e4", "INBOX", sizedBody("four", 40)), "e4 "+full)

	// EXPUNGE makes room: the APPEND works again.
	c.exchange("f1", "EXPUNGE", "* 1 EXPUNGE", "f1 OK EXPUNGE completed")
	c.exchange("f2", `GETQUOTA ""`, `* QUOTA "" (STORAGE 3 3 MESSAGE 2 3)`, "f2 OK GETQUOTA completed")
	c.expectLines("APPEND after EXPUNGE", c.appendLit("f3", "INBOX", sizedBody("four", 40)),
		"* 2 EXISTS", "f3 OK [APPENDUID "+uv+" 4] APPEND completed")
	c.exchange("f4", `GETQUOTA ""`, `* QUOTA "" (STORAGE 3 3 MESSAGE 3 3)`, "f4 OK GETQUOTA completed")

	// The administrator's changes apply at once; only limited resources
	// are listed; no limit at all means no quota root.
	setQuota(0, 10)
	c.exchange("g1", "GETQUOTAROOT INBOX", `* QUOTAROOT "INBOX" ""`, `* QUOTA "" (MESSAGE 3 10)`, "g1 OK GETQUOTAROOT completed")
	setQuota(1000, 0) // below the usage: nothing is removed, growth is refused
	c.exchange("g2", `GETQUOTA ""`, `* QUOTA "" (STORAGE 3 1)`, "g2 OK GETQUOTA completed")
	c.exchange("g3", "COPY 1 Archive", "g3 "+full)
	setQuota(0, 0)
	c.exchange("g4", "GETQUOTAROOT INBOX", `* QUOTAROOT "INBOX"`, "g4 OK GETQUOTAROOT completed")
	c.exchange("g5", `GETQUOTA ""`, "g5 NO [NONEXISTENT] no such quota root")
	c.exchange("g6", "COPY 1 Archive", "g6 OK [COPYUID "+auv+" 3 2] COPY completed")
}

// TestQuotaMultiAppend: MULTIAPPEND (RFC 3502) is all or nothing, also for
// quota: messages that fit one by one but not together are all refused.
func TestQuotaMultiAppend(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.store.SetQuota(context.Background(), testUser, 200, 0); err != nil {
		t.Fatal(err)
	}
	c := e.login()
	m1, m2 := sizedBody("one", 100), sizedBody("two", 101)
	c.write("a APPEND INBOX {100+}\r\n" + m1 + " {101+}\r\n" + m2 + "\r\n")
	c.expectLines("MULTIAPPEND over quota", c.until("a"), "a NO [OVERQUOTA] quota exceeded (mailbox is full)")
	if n := len(e.messages()); n != 0 {
		t.Fatalf("INBOX has %d messages after a refused MULTIAPPEND", n)
	}
	m2 = sizedBody("two", 100)
	c.write("b APPEND INBOX {100+}\r\n" + m1 + " {100+}\r\n" + m2 + "\r\n")
	c.expectLines("MULTIAPPEND to the limit", c.until("b"),
		"b OK [APPENDUID "+strconv.FormatUint(uint64(e.inbox.UIDValidity), 10)+" 1:2] APPEND completed")

	// The check before the literal uses its size; the store's check,
	// the one that counts, uses the size stored: bare LFs become CRLF,
	// so a 30-octet literal with 3 LFs is 33 octets and does not fit in
	// 30 octets of room.
	if err := e.store.SetQuota(context.Background(), testUser, 230, 0); err != nil {
		t.Fatal(err)
	}
	lf := "Subject: lf\n\n" + strings.Repeat("z", 16) + "\n"
	if len(lf) != 30 {
		t.Fatalf("test message is %d octets", len(lf))
	}
	c.write("c APPEND INBOX {30+}\r\n" + lf + "\r\n")
	c.expectLines("APPEND over quota once stored", c.until("c"), "c NO [OVERQUOTA] quota exceeded (mailbox is full)")
	if err := e.store.SetQuota(context.Background(), testUser, 233, 0); err != nil {
		t.Fatal(err)
	}
	c.write("d APPEND INBOX {30+}\r\n" + lf + "\r\n")
	c.expectLines("APPEND that fits once stored", c.until("d"),
		"d OK [APPENDUID "+strconv.FormatUint(uint64(e.inbox.UIDValidity), 10)+" 3] APPEND completed")
}

// TestQuotaGoIMAP: go-imap v2's client, an independent implementation,
// decodes the capabilities, QUOTAROOT and QUOTA responses, the OVERQUOTA
// response code and STATUS DELETED-STORAGE.
func TestQuotaGoIMAP(t *testing.T) {
	e := newEnv(t, envOptions{})
	if err := e.store.SetQuota(context.Background(), testUser, 2048, 5); err != nil {
		t.Fatal(err)
	}
	e.deliver(sizedBody("one", 1500))
	g := e.loginGo()
	caps := g.Caps()
	for _, c := range []imap.Cap{imap.CapQuota, "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} {
		if !caps.Has(c) {
			t.Errorf("capability %s not advertised", c)
		}
	}
	want := []imapclient.QuotaData{{Root: "", Resources: map[imap.QuotaResourceType]imapclient.QuotaResourceData{
		imap.QuotaResourceStorage: {Usage: 2, Limit: 2},
		imap.QuotaResourceMessage: {Usage: 1, Limit: 5},
	}}}
	got, err := g.GetQuotaRoot("INBOX").Wait()
	g.must("GETQUOTAROOT", err)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("GETQUOTAROOT = %+v, want %+v", got, want)
	}
	one, err := g.GetQuota("").Wait()
	g.must("GETQUOTA", err)
	if !reflect.DeepEqual(*one, want[0]) {
		t.Fatalf("GETQUOTA = %+v, want %+v", *one, want[0])
	}
	body := sizedBody("two", 600)
	cmd := g.Append("INBOX", int64(len(body)), &imap.AppendOptions{Time: time.Now()})
	cmd.Write([]byte(body))
	cmd.Close()
	_, err = cmd.Wait()
	var ierr *imap.Error
	if !errors.As(err, &ierr) || ierr.Type != imap.StatusResponseTypeNo || ierr.Code != imap.ResponseCodeOverQuota {
		t.Fatalf("APPEND over quota: %v, want NO [OVERQUOTA]", err)
	}
	_, err = g.Select("INBOX", nil).Wait()
	g.must("SELECT", err)
	g.must("STORE", g.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	st, err := g.Status("INBOX", &imap.StatusOptions{NumDeleted: true, DeletedStorage: true}).Wait()
	g.must("STATUS", err)
	if st.NumDeleted == nil || *st.NumDeleted != 1 || st.DeletedStorage == nil || *st.DeletedStorage != 1500 {
		t.Fatalf("STATUS = %+v, want DELETED 1 DELETED-STORAGE 1500", st)
	}
}
