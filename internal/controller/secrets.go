package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/faasvm/appliance/internal/function"
)

// Secrets: a function's function.yaml names them; their values are files
// in the operator's secrets directory (Options.SecretsDir), read when a
// version deploys and handed to its VMs on the config disk, which only the
// engine reads (mode 0600 in the state dir). A missing secret makes the
// function invalid; a changed one redeploys every function using it.

// Bounds on secrets: each fits a config disk with the others.
const (
	maxSecretBytes   = 256 << 10
	maxSecretsBytes  = 512 << 10
	secretsPoll      = 2 * time.Second
	maxSecretsListed = 1000
)

// errSecretMissing is wrapped when a named secret has no file.
var errSecretMissing = errors.New("secret not found")

// loadSecrets reads the named secrets from dir. Errors name the secret,
// never a value.
func loadSecrets(dir string, names []string) (map[string][]byte, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if dir == "" {
		return nil, fmt.Errorf("secret %q: %w: the appliance has no secrets directory (set FAAS_SECRETS_DIR)", names[0], errSecretMissing)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the secrets directory (FAAS_SECRETS_DIR): %w", err)
	}
	defer root.Close()
	out := make(map[string][]byte, len(names))
	total := 0
	for _, name := range names {
		if function.ValidateName(name) != nil {
			return nil, fmt.Errorf("secret name %q: not a valid name", name)
		}
		b, err := readSecret(root, name)
		if err != nil {
			return nil, err
		}
		total += len(b)
		if total > maxSecretsBytes {
			return nil, fmt.Errorf("secrets %v: more than %d KiB together, the most a VM gets", names, maxSecretsBytes>>10)
		}
		out[name] = b
	}
	return out, nil
}

// readSecret reads one secret file inside root: a regular file (a symlink
// is followed only within the directory), at most maxSecretBytes.
func readSecret(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("secret %q: %w in the secrets directory: add a file named %s there", name, errSecretMissing, name)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret %q: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	if len(b) > maxSecretBytes {
		return nil, fmt.Errorf("secret %q: larger than %d KiB", name, maxSecretBytes>>10)
	}
	return b, nil
}

// withSecrets is the version digest including the secrets' content, so
// that a changed secret is a new version (redeployed, never served by a VM
// or a snapshot made with the old value).
func withSecrets(digest string, secrets map[string][]byte) string {
	if len(secrets) == 0 {
		return digest
	}
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	fmt.Fprintf(h, "%s\nsecrets\n", digest)
	for _, n := range names {
		sum := sha256.Sum256(secrets[n])
		fmt.Fprintf(h, "%s %x\n", n, sum)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// secretsState fingerprints every file in dir (name → sha256), to notice
// changes; unreadable entries are left out.
func secretsState(dir string) map[string]string {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil
	}
	defer root.Close()
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for i, e := range entries {
		if i >= maxSecretsListed {
			break
		}
		if function.ValidateName(e.Name()) != nil {
			continue // e.g. Kubernetes' ..data: not a secret name
		}
		b, err := readSecret(root, e.Name())
		if err != nil {
			continue
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = hex.EncodeToString(sum[:])
	}
	return out
}

// watchSecrets polls the secrets directory and syncs every function that
// names a secret that appeared, changed or went away.
func (c *Controller) watchSecrets() {
	defer c.wg.Done()
	prev := secretsState(c.opts.SecretsDir)
	t := time.NewTicker(secretsPoll)
	defer t.Stop()
	for {
		select {
		case <-c.life.Done():
			return
		case <-t.C:
		}
		cur := secretsState(c.opts.SecretsDir)
		var changed []string
		for n, h := range cur {
			if prev[n] != h {
				changed = append(changed, n)
			}
		}
		for n := range prev {
			if _, ok := cur[n]; !ok {
				changed = append(changed, n)
			}
		}
		prev = cur
		if len(changed) == 0 {
			continue
		}
		c.mu.Lock()
		var users []string
		for name, f := range c.fns {
			for _, s := range f.secretNames {
				if slices.Contains(changed, s) {
					users = append(users, name)
					break
				}
			}
		}
		c.mu.Unlock()
		sort.Strings(users)
		for _, name := range users {
			c.log.Info("secret changed: redeploying", "function", name, "secrets", changed)
			c.Sync(name)
		}
	}
}
