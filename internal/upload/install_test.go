package upload

import (
	"os"
	"path/filepath"
	"testing"
)

// A second upload of a name replaces the first in one step: the new files
// are in place, nothing of the old one is left, and no work folder stays.
func TestCreateReplacesAnEarlierUpload(t *testing.T) {
	dir := t.TempDir()
	s := &Store{Dir: filepath.Join(dir, "uploads"), FunctionsDir: filepath.Join(dir, "functions"), Limits: testLimits}
	if err := s.Prepare(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		code        string
		wantCreated bool
	}{
		{code: "echo one", wantCreated: true},
		{code: "echo two", wantCreated: false},
		{code: "echo three", wantCreated: false},
	}
	for _, st := range steps {
		res, err := s.Create(t.Context(), Source{Name: "fn", Runtime: "bash", Code: st.code})
		if err != nil {
			t.Fatalf("create %q: %v", st.code, err)
		}
		if res.Created != st.wantCreated {
			t.Errorf("create %q: Created got %v, want %v", st.code, res.Created, st.wantCreated)
		}
		got, err := os.ReadFile(filepath.Join(s.Dir, "fn", "handler.sh"))
		if err != nil || string(got) != st.code {
			t.Errorf("after create %q: handler.sh got %q, %v", st.code, got, err)
		}
	}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "fn" {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("uploads dir holds %v, want only fn", names)
	}
}
