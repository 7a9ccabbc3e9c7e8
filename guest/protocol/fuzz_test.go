package protocol

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodeDisk: the agent's config disk decodes to a valid config or is
// refused, never a panic; a decoded config encodes and decodes back to the
// same config.
func FuzzDecodeDisk(f *testing.F) {
	good, err := EncodeDisk(&Config{Name: "fn", Secret: "a", ControlSecret: "b", Mode: ModeExec, Command: []string{"./h"}, Timeout: Duration(1e9)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good[:len(ConfigMagic)+200])
	f.Add([]byte(ConfigMagic + `{"secret":"a","controlSecret":"a","mode":"exec","command":["x"],"timeout":"1s"}`))
	f.Add([]byte(ConfigMagic + `{"secret":"a","controlSecret":"b","mode":"http","handler":"h.py","timeout":"-1s","template":"lambda"}`))
	f.Add([]byte(ConfigMagic + `{"timeout": 5}`))
	f.Add([]byte(ConfigMagic + "\x00garbage"))
	f.Add([]byte("nope"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeDisk(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("DecodeDisk returned an invalid config: %v", err)
		}
		disk, err := EncodeDisk(c)
		if err != nil {
			return // too large for a disk: refused, fine
		}
		again, err := DecodeDisk(disk)
		if err != nil {
			t.Fatalf("a decoded config does not decode again: %v", err)
		}
		if !reflect.DeepEqual(normalize(t, c), normalize(t, again)) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}

// normalize renders c as JSON (nil and empty maps alike).
func normalize(t *testing.T, c *Config) string {
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzRestore: a restore request's body decodes and validates or is
// refused, never a panic; a valid one has distinct secrets and enough
// entropy.
func FuzzRestore(f *testing.F) {
	f.Add([]byte(`{"secret":"a","controlSecret":"b","entropy":"` + string(make([]byte, 0)) + `","timeUnixNano":1}`))
	f.Add([]byte(`{"secret":"a","controlSecret":"a"}`))
	f.Add([]byte(`{"entropy":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Restore
		if json.Unmarshal(b, &r) != nil || r.Validate() != nil {
			return
		}
		if r.Secret == "" || r.Secret == r.ControlSecret || len(r.Entropy) < RestoreEntropyBytes {
			t.Fatalf("Validate accepted %+v", r)
		}
	})
}
