package async

import (
	"strings"
	"testing"
)

func TestStoreMaxBytes(t *testing.T) {
	const mib, gib = int64(1 << 20), int64(1 << 30)
	tests := []struct {
		name     string
		explicit int64
		free     int64
		want     int64
		wantErr  string // a part of the error; "" for none
	}{
		{name: "default on a large disk is 1 GiB", free: 500 * gib, want: gib},
		{name: "default on a small disk is an eighth of the free space", free: 640 * mib, want: 80 * mib},
		{name: "default just at 1 GiB", free: 8 * gib, want: gib},
		{name: "default on a nearly full disk fails", free: 7 * mib, wantErr: "only 7.0 MiB free"},
		{name: "explicit value that fits is kept", explicit: 32 * mib, free: 640 * mib, want: 32 * mib},
		{name: "explicit value at the limit is kept", explicit: 160 * mib, free: 640 * mib, want: 160 * mib},
		{name: "explicit value above the disk names the setting", explicit: gib, free: 640 * mib,
			wantErr: "FAAS_ASYNC_MAX_BYTES (async_max_bytes) is 1.0 GiB"},
		{name: "explicit value above the disk says what fits", explicit: 161 * mib, free: 640 * mib,
			wantErr: "at most 160.0 MiB"},
		{name: "no free space at all", explicit: mib, free: 0, wantErr: "at most 0 B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := storeMaxBytes(tt.explicit, tt.free)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
			if 3*got > tt.free/4*3 {
				t.Errorf("3 reservations of %d exceed what JetStream may use of %d free", got, tt.free)
			}
		})
	}
}

// On a store whose disk cannot hold an explicit bound, Open fails with an
// error naming the setting instead of the embedded server's own refusal.
func TestOpenRefusesAnExplicitBoundTheDiskCannotHold(t *testing.T) {
	dir := t.TempDir()
	free, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), Options{StoreDir: dir, MaxBytes: free})
	if err == nil || !strings.Contains(err.Error(), "FAAS_ASYNC_MAX_BYTES") {
		t.Fatalf("Open with MaxBytes = the whole free space: got %v, want an error naming FAAS_ASYNC_MAX_BYTES", err)
	}
}
