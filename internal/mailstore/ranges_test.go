package mailstore

import (
	"slices"
	"testing"
)

func TestUIDRanges(t *testing.T) {
	r := func(lo, hi UID) UIDRange { return UIDRange{lo, hi} }
	view := []UID{1, 2, 3, 7, 8, 20, 21, 40}
	for _, tc := range []struct {
		uids, all []UID
		want      []UIDRange
	}{
		{nil, nil, nil},
		{nil, view, nil},
		{[]UID{5}, nil, []UIDRange{r(5, 5)}},
		{[]UID{1, 2, 3, 5, 6, 9}, nil, []UIDRange{r(1, 3), r(5, 6), r(9, 9)}},
		// Consecutive in the view: one range across the expunged gaps.
		{view, view, []UIDRange{r(1, 40)}},
		{[]UID{3, 7, 8, 20}, view, []UIDRange{r(3, 20)}},
		{[]UID{1, 3, 8, 40}, view, []UIDRange{r(1, 1), r(3, 3), r(8, 8), r(40, 40)}},
		{[]UID{2, 3, 21, 40}, view, []UIDRange{r(2, 3), r(21, 40)}},
		// UIDs not in the view stand alone.
		{[]UID{2, 4, 5, 7}, view, []UIDRange{r(2, 2), r(4, 4), r(5, 5), r(7, 7)}},
		{[]UID{^UID(0) - 1, ^UID(0)}, nil, []UIDRange{r(^UID(0)-1, ^UID(0))}},
	} {
		if got := UIDRanges(tc.uids, tc.all); !slices.Equal(got, tc.want) {
			t.Errorf("UIDRanges(%v, %v) = %v, want %v", tc.uids, tc.all, got, tc.want)
		}
	}
}
