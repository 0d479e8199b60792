package imap

import (
	"testing"
)

func TestListAndMailboxCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.exchange("a", `LIST "" *`,
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren) "/" "INBOX"`,
		`* LIST (\HasNoChildren \Junk) "/" "Junk"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
		`a OK LIST completed`)
	c.exchange("b", `LIST "" ""`, `* LIST (\Noselect) "/" ""`, "b OK LIST completed")
	c.exchange("c", `CREATE Work/Projects/`, "c OK CREATE completed")
	c.exchange("d", `CREATE Work/Projects`, "d NO [ALREADYEXISTS] mailbox already exists")
	c.exchange("e", `CREATE INBOX`, "e NO [ALREADYEXISTS] INBOX always exists")
	// Work does not exist itself: it is listed as a non-existent parent.
	c.exchange("f", `LIST "" %`,
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren) "/" "INBOX"`,
		`* LIST (\HasNoChildren \Junk) "/" "Junk"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
		`* LIST (\Noselect \HasChildren) "/" "Work"`,
		`f OK LIST completed`)
	c.exchange("g", `LIST "Work/" %`, `* LIST (\HasNoChildren) "/" "Work/Projects"`, "g OK LIST completed")
	c.exchange("h", `LIST "" inbox`, `* LIST (\HasNoChildren) "/" "INBOX"`, "h OK LIST completed")
	// Modified UTF-7 for IMAP4rev1 clients (RFC 3501 §5.1.3).
	c.exchange("i", `CREATE "Entw&APw-rfe"`, "i OK CREATE completed")
	c.exchange("j", `CREATE "Bad&AGE-"`, "j BAD mailbox name is not valid modified UTF-7")
	c.exchange("k", `LIST "" Entw*`, `* LIST (\HasNoChildren) "/" "Entw&APw-rfe"`, "k OK LIST completed")
	// LIST-EXTENDED: selection and return options.
	c.exchange("l", `SUBSCRIBE "Entw&APw-rfe"`, "l OK SUBSCRIBE completed")
	c.exchange("m", `LIST (SUBSCRIBED) "" Entw*`, `* LIST (\HasNoChildren \Subscribed) "/" "Entw&APw-rfe"`, "m OK LIST completed")
	c.exchange("n", `LSUB "" Entw*`, `* LSUB () "/" "Entw&APw-rfe"`, "n OK LSUB completed")
	c.exchange("o", `UNSUBSCRIBE "Entw&APw-rfe"`, "o OK UNSUBSCRIBE completed")
	c.exchange("p", `LSUB "" Entw*`, "p OK LSUB completed")
	c.exchange("q", `LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)`,
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren \Junk) "/" "Junk"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
		"q OK LIST completed")
	c.exchange("r", `LIST "" (INBOX Sent) RETURN (CHILDREN STATUS (MESSAGES UIDNEXT UNSEEN))`,
		`* LIST (\HasNoChildren) "/" "INBOX"`,
		`* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* STATUS "Sent" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)`,
		"r OK LIST completed")
	c.exchange("s", `RENAME Work/Projects Play`, "s OK RENAME completed")
	c.exchange("t", `LIST "" Play`, `* LIST (\HasNoChildren) "/" "Play"`, "t OK LIST completed")
	c.exchange("u", `DELETE Play`, "u OK DELETE completed")
	c.exchange("v", `DELETE Play`, "v NO [NONEXISTENT] no such mailbox")
	c.exchange("w", `DELETE INBOX`, "w NO [CANNOT] operation not allowed")
	c.exchange("x", `CREATE Stuff (USE (\Flagged))`, `x NO [USEATTR] unsupported special-use attribute`)
	c.exchange("y", `CREATE Stuff (USE (\Archive))`, `y OK CREATE completed`)
	c.exchange("z", `LIST "" Stuff`, `* LIST (\HasNoChildren \Archive) "/" "Stuff"`, "z OK LIST completed")
	c.exchange("z1", `LIST (BOGUS) "" *`, "z1 BAD unknown LIST selection option")
}

func TestStatus(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	c := e.login()
	mb, _ := e.store.Mailbox(t.Context(), e.account.ID, "INBOX")
	c.exchange("a", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE HIGHESTMODSEQ RECENT)",
		"* STATUS \"INBOX\" (MESSAGES 3 UIDNEXT 4 UIDVALIDITY "+itoa(uint64(mb.UIDValidity))+" UNSEEN 3 SIZE "+
			itoa(uint64(mb.Size))+" HIGHESTMODSEQ "+itoa(mb.HighestModSeq)+" RECENT 0)",
		"a OK STATUS completed")
	c.exchange("b", "STATUS Nope (MESSAGES)", "b NO [NONEXISTENT] no such mailbox")
	c.exchange("c", "STATUS INBOX (BOGUS)", `c BAD unknown STATUS item "BOGUS"`)
}

func TestMUTF7(t *testing.T) {
	for _, tc := range []struct{ utf8, utf7 string }{
		{"Entwürfe", "Entw&APw-rfe"},
		{"a&b", "a&-b"},
		{"日本語", "&ZeVnLIqe-"},
		{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
		{"😀", "&2D3eAA-"},
	} {
		if got := encodeMUTF7(tc.utf8); got != tc.utf7 {
			t.Errorf("encode(%q) = %q, want %q", tc.utf8, got, tc.utf7)
		}
		if got, err := decodeMUTF7(tc.utf7); err != nil || got != tc.utf8 {
			t.Errorf("decode(%q) = %q, %v, want %q", tc.utf7, got, err, tc.utf8)
		}
	}
	for _, bad := range []string{"&", "&AGE-", "&Jjo!", "a\x80", "&2D0-"} {
		if got, err := decodeMUTF7(bad); err == nil {
			t.Errorf("decode(%q) = %q, want error", bad, got)
		}
	}
}

func TestMatchPattern(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"*", "a/b", true}, {"%", "a/b", false}, {"%", "a", true}, {"a/%", "a/b", true},
		{"a/%", "a/b/c", false}, {"a*c", "a/b/c", true}, {"inbox", "INBOX", true}, {"INBOX/*", "INBOX/x", true},
		{"Inbox", "Inboxy", false}, {"", "", true}, {"x", "", false}, {"%%%*", "abc", true},
	} {
		if got := matchPattern(tc.pat, tc.name); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v", tc.pat, tc.name, got)
		}
	}
}

func TestRenameInboxAndReturnSubscribed(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(2)
	c := e.login()
	c.exchange("a", `RENAME INBOX Old`, "a OK RENAME completed")
	c.exchange("b", `STATUS INBOX (MESSAGES)`, `* STATUS "INBOX" (MESSAGES 0)`, "b OK STATUS completed")
	c.exchange("c", `STATUS Old (MESSAGES)`, `* STATUS "Old" (MESSAGES 2)`, "c OK STATUS completed")
	c.exchange("c1", `UNSUBSCRIBE Old`, "c1 OK UNSUBSCRIBE completed")
	c.exchange("d", `LIST "" (INBOX Old) RETURN (SUBSCRIBED)`,
		`* LIST (\HasNoChildren \Subscribed) "/" "INBOX"`, `* LIST (\HasNoChildren) "/" "Old"`, "d OK LIST completed")
	c.exchange("e", `CREATE Old/Sub`, "e OK CREATE completed")
	c.exchange("f", `SUBSCRIBE Old/Sub`, "f OK SUBSCRIBE completed")
	// RECURSIVEMATCH: Old is not subscribed but has a subscribed child.
	c.exchange("g", `LIST (SUBSCRIBED RECURSIVEMATCH) "" Old`,
		`* LIST (\HasChildren) "/" "Old" ("CHILDINFO" ("SUBSCRIBED"))`, "g OK LIST completed")
}
