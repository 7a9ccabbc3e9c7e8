package qemu

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for valid
	}{
		{name: "minimal", cfg: Config{StateDir: "/var/lib/faas"}},
		{name: "everything set", cfg: Config{
			QEMUPath: "/usr/bin/qemu-system-x86_64", Accel: AccelKVM, UIDBase: 50000, UIDCount: 10,
			StateDir: "/var/lib/faas", KeepLogsDir: "/var/log/faas",
			BootTimeout: time.Minute, StopTimeout: time.Second, ProbeTimeout: 5 * time.Second,
		}},
		{name: "tcg", cfg: Config{StateDir: "/s", Accel: AccelTCG}},
		{name: "auto", cfg: Config{StateDir: "/s", Accel: AccelAuto}},
		{name: "no state dir", cfg: Config{}, wantErr: "state dir is empty"},
		{name: "relative state dir", cfg: Config{StateDir: "state"}, wantErr: `state dir "state" is not an absolute path`},
		{name: "state dir too long for sockets", cfg: Config{StateDir: "/" + strings.Repeat("d", 70)}, wantErr: "too long"},
		{name: "unknown accel", cfg: Config{StateDir: "/s", Accel: "hvf"}, wantErr: `accel "hvf" is not`},
		{name: "relative keep-logs dir", cfg: Config{StateDir: "/s", KeepLogsDir: "logs"}, wantErr: "keep-logs dir"},
		{name: "negative boot timeout", cfg: Config{StateDir: "/s", BootTimeout: -time.Second}, wantErr: "boot timeout -1s is negative"},
		{name: "negative stop timeout", cfg: Config{StateDir: "/s", StopTimeout: -1}, wantErr: "stop timeout"},
		{name: "negative probe timeout", cfg: Config{StateDir: "/s", ProbeTimeout: -1}, wantErr: "probe timeout"},
		{name: "negative uid count", cfg: Config{StateDir: "/s", UIDCount: -1}, wantErr: "uid count -1 is negative"},
		{name: "uids past the largest", cfg: Config{StateDir: "/s", UIDBase: 4294967000, UIDCount: 1000}, wantErr: "go past the largest user id"},
		{name: "no user change", cfg: Config{StateDir: "/s", UIDBase: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{StateDir: "/s"}.withDefaults()
	if got.QEMUPath != DefaultQEMUPath || got.UIDBase != DefaultUIDBase || got.UIDCount != DefaultUIDCount || got.Accel != AccelAuto ||
		got.BootTimeout != DefaultBootTimeout || got.StopTimeout != DefaultStopTimeout ||
		got.ProbeTimeout != DefaultProbeTimeout || got.Logger == nil || got.KeepLogsDir != "" {
		t.Errorf("withDefaults: got %+v, want every default applied and KeepLogsDir off", got)
	}
	set := Config{StateDir: "/s", QEMUPath: "/q", Accel: AccelTCG, BootTimeout: time.Second}.withDefaults()
	if set.QEMUPath != "/q" || set.Accel != AccelTCG || set.BootTimeout != time.Second {
		t.Errorf("withDefaults: got %+v, want set fields kept", set)
	}
}

func TestUIDPools(t *testing.T) {
	tests := []struct {
		name             string
		cfg              Config
		wantIso, wantEgr UIDRange
		wantOK           bool
	}{
		{name: "defaults", cfg: Config{}, wantIso: UIDRange{40000, 40999}, wantEgr: UIDRange{41000, 41999}, wantOK: true},
		{name: "set", cfg: Config{UIDBase: 100, UIDCount: 10}, wantIso: UIDRange{100, 109}, wantEgr: UIDRange{110, 119}, wantOK: true},
		{name: "off", cfg: Config{UIDBase: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iso, egr, ok := tt.cfg.UIDPools()
			if iso != tt.wantIso || egr != tt.wantEgr || ok != tt.wantOK {
				t.Errorf("UIDPools: got %v %v %v, want %v %v %v", iso, egr, ok, tt.wantIso, tt.wantEgr, tt.wantOK)
			}
		})
	}
}
