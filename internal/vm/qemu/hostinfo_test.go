package qemu

import (
	"strings"
	"testing"
)

// cpuinfoEPYC is the start of /proc/cpuinfo on the build machines.
const cpuinfoEPYC = `processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 23
model		: 49
model name	: AMD EPYC 7B12
stepping	: 0
microcode	: 0xffffffff
cpu MHz		: 2596.144
cache size	: 512 KB
physical id	: 0

processor	: 1
cpu MHz		: 2400.000
`

func TestParseTSCKHz(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr string
	}{
		{name: "first cpu wins", in: cpuinfoEPYC, want: 2596144},
		{name: "whole MHz", in: "cpu MHz\t\t: 3000.000\n", want: 3000000},
		{name: "rounded to kHz", in: "cpu MHz : 1999.9996\n", want: 2000000},
		{name: "no MHz line (arm64)", in: "processor\t: 0\nBogoMIPS\t: 50.00\n", wantErr: "no cpu MHz line"},
		{name: "garbled", in: "cpu MHz\t\t: fast\n", wantErr: `parsing cpu MHz "fast"`},
		{name: "zero", in: "cpu MHz\t\t: 0.000\n", wantErr: "out of range"},
		{name: "similar key ignored", in: "cpu MHz dynamic : 12\ncpu MHz : 100\n", want: 100000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTSCKHz(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d, nil", got, err, tt.want)
			}
		})
	}
}

func TestParseHostForward(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    int
		wantErr string
	}{
		{
			name: "qemu 7.2 fresh vm",
			out: "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[HOST_FORWARD]   8       127.0.0.1 37975       10.0.2.15  8080     0     0\r\n",
			want: 37975,
		},
		{
			name: "with live connections",
			out: "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[ESTABLISHED]   21       127.0.0.1 51514       10.0.2.15  8080     0     0\r\n" +
				"  TCP[HOST_FORWARD]  13       127.0.0.1 40123       10.0.2.15  8080     0     0\r\n" +
				"  UDP[236 sec]       15       10.0.2.15 45678        10.0.2.3    53     0     0\r\n",
			want: 40123,
		},
		{
			name: "older qemu says VLAN",
			out: "VLAN -1 (n0):\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\n" +
				"  TCP[HOST_FORWARD]  11       127.0.0.1 45001       10.0.2.15  8080     0     0\n",
			want: 45001,
		},
		{
			name: "other forwards and netdevs ignored",
			out: "Hub -1 (n1):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[HOST_FORWARD]   8       127.0.0.1 40000       10.0.2.15  8080     0     0\r\n" +
				"Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[HOST_FORWARD]   9       127.0.0.1 40001       10.0.2.15    22     0     0\r\n" +
				"  TCP[HOST_FORWARD]  10       127.0.0.1 40002       10.0.2.15  8080     0     0\r\n",
			want: 40002,
		},
		{
			name:    "no forward",
			out:     "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n",
			wantErr: "no TCP host forward to guest port 8080 for netdev n0",
		},
		{
			name:    "empty (no user netdev)",
			out:     "",
			wantErr: "no TCP host forward",
		},
		{
			name: "unbound port",
			out: "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
				"  TCP[HOST_FORWARD]   8       127.0.0.1     0       10.0.2.15  8080     0     0\r\n",
			wantErr: `bad host port "0"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHostForward(tt.out, "n0", 8080)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %d, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %d, %v; want %d, nil", got, err, tt.want)
			}
		})
	}
}
