package async

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Allowlist says which hosts X-Callback-Url may name. Entries are host
// names ("hooks.example.com"), subdomain wildcards ("*.example.com"), IP
// addresses ("127.0.0.1", "::1") or CIDR prefixes ("10.1.0.0/16").
//
// A URL is accepted at submit time when its host matches an entry. At send
// time every address actually dialled is checked again (DNS may have
// changed, or been made to change): a loopback, private, link-local,
// shared, unspecified or multicast address is refused unless an IP or CIDR
// entry covers it. So a host name entry alone never reaches an internal
// address, however its DNS answers.
type Allowlist struct {
	hosts    []string // exact names, lower case
	suffixes []string // ".example.com" for "*.example.com"
	prefixes []netip.Prefix
}

// ParseAllowlist reads a comma- or space-separated list of entries.
func ParseAllowlist(list string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, e := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		e = strings.ToLower(e)
		if p, err := netip.ParsePrefix(e); err == nil {
			a.prefixes = append(a.prefixes, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
			ip = ip.Unmap()
			a.prefixes = append(a.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		name, wildcard := strings.CutPrefix(e, "*.")
		if !validHostName(name) {
			return nil, fmt.Errorf("callback host %q is not a host name, *.domain, IP address or CIDR prefix", e)
		}
		if wildcard {
			a.suffixes = append(a.suffixes, "."+name)
		} else {
			a.hosts = append(a.hosts, name)
		}
	}
	return a, nil
}

// validHostName accepts DNS names of letters, digits, '-' and '.', each
// label 1-63 characters, 253 at most.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Empty says whether no host is allowed (the default).
func (a *Allowlist) Empty() bool {
	return a == nil || len(a.hosts)+len(a.suffixes)+len(a.prefixes) == 0
}

// CheckURL is the submit-time check of an X-Callback-Url value. Errors
// wrap ErrCallbackRefused.
func (a *Allowlist) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrCallbackRefused, raw)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: scheme %q is not http or https", ErrCallbackRefused, u.Scheme)
	case u.User != nil:
		return nil, fmt.Errorf("%w: credentials in the URL are not accepted", ErrCallbackRefused)
	case u.Fragment != "":
		u.Fragment = ""
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: port %q is not a number from 1 to 65535", ErrCallbackRefused, p)
		}
	}
	if !a.allowsHost(u.Hostname()) {
		if a.Empty() {
			return nil, fmt.Errorf("%w: no callback host is allowed (callback_hosts is empty)", ErrCallbackRefused)
		}
		return nil, fmt.Errorf("%w: host %q is not in callback_hosts", ErrCallbackRefused, u.Hostname())
	}
	return u, nil
}

// allowsHost matches a URL's host (a name or an IP literal) to the list.
func (a *Allowlist) allowsHost(host string) bool {
	if a == nil {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		return a.coversIP(ip)
	}
	for _, h := range a.hosts {
		if host == h {
			return true
		}
	}
	for _, s := range a.suffixes {
		if strings.HasSuffix(host, s) && len(host) > len(s) {
			return true
		}
	}
	return false
}

// coversIP says whether an IP or CIDR entry names ip.
func (a *Allowlist) coversIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// internal says whether ip is an address a callback must not reach unless
// an IP entry allows it: loopback, RFC 1918 / ULA private, link-local
// (cloud metadata lives there), CGNAT shared space, unspecified, multicast.
func internal(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip) ||
		netip.MustParsePrefix("0.0.0.0/8").Contains(ip)
}

// errInternalAddress: the dial was refused by the allowlist's address check.
var errInternalAddress = errors.New("address is internal and not in callback_hosts")

// dialControl refuses connections to internal addresses the list does not
// name. It runs for every address the dialer tries, after DNS, so a
// rebinding answer is caught too.
func (a *Allowlist) dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("callback address %q: %w", address, err)
	}
	if internal(ap.Addr()) && !a.coversIP(ap.Addr()) {
		return fmt.Errorf("callback to %s: %w", ap.Addr(), errInternalAddress)
	}
	return nil
}

// callbackBodyLimit bounds the answer a callback carries.
const callbackBodyLimit = 1 << 20

// Callbacks posts results to allowed URLs.
type callbacks struct {
	allow    *Allowlist
	client   *http.Client
	attempts int
	backoff  time.Duration
}

func newCallbacks(allow *Allowlist, timeout time.Duration) *callbacks {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: allow.dialControl}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would dial for us, unchecked
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &callbacks{
		allow: allow,
		client: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			// A redirect could lead anywhere: the first answer is final.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		attempts: 3,
		backoff:  time.Second,
	}
}

// callbackMessage is what one callback carries.
type callbackMessage struct {
	url      string
	result   *Result
	body     []byte // the function's answer, at most callbackBodyLimit
	more     bool   // the answer was longer
	ctype    string
	maxTries int
}

// send posts the result, retrying connection errors and 5xx/429 answers a
// few times, and reports how it went.
func (cb *callbacks) send(ctx context.Context, m callbackMessage) *CallbackResult {
	out := &CallbackResult{URL: m.url, State: CallbackFailed}
	u, err := cb.allow.CheckURL(m.url) // the list may have changed since submit
	if err != nil {
		out.Error = err.Error()
		return out
	}
	delay := cb.backoff
	for out.Attempts < cb.attempts {
		out.Attempts++
		status, err := cb.post(ctx, u, m)
		out.StatusCode = status
		switch {
		case err == nil && status < 300:
			out.State, out.Error = CallbackSent, ""
			return out
		case err != nil:
			out.Error = err.Error()
			if errors.Is(err, errInternalAddress) {
				return out // refusing again will not help
			}
		case status == http.StatusTooManyRequests || status >= 500:
			out.Error = fmt.Sprintf("callback answered %d", status)
		default:
			out.Error = fmt.Sprintf("callback answered %d", status)
			return out
		}
		if out.Attempts < cb.attempts {
			select {
			case <-ctx.Done():
				return out
			case <-time.After(delay):
			}
			delay *= 2
		}
	}
	return out
}

func (cb *callbacks) post(ctx context.Context, u *url.URL, m callbackMessage) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(m.body))
	if err != nil {
		return 0, fmt.Errorf("building callback request: %w", err)
	}
	r := m.result
	h := req.Header
	h.Set("User-Agent", "faasvm-async")
	h.Set("X-Call-Id", r.ID)
	h.Set("X-Function-Name", r.Function)
	h.Set("X-Function-Status", strconv.Itoa(r.StatusCode))
	h.Set("X-Call-State", r.State)
	h.Set("X-Retry", strconv.Itoa(max(r.Attempts-1, 0)))
	h.Set("X-Retry-Max", strconv.Itoa(max(m.maxTries-1, 0)))
	if !r.StartedAt.IsZero() && !r.FinishedAt.IsZero() {
		h.Set("X-Duration-Seconds", strconv.FormatFloat(r.FinishedAt.Sub(r.StartedAt).Seconds(), 'f', 6, 64))
	}
	if r.Error != "" {
		h.Set("X-Call-Error", sanitizeHeader(r.Error))
	}
	if m.more {
		h.Set("X-Body-Truncated", "true")
	}
	if m.ctype != "" {
		h.Set("Content-Type", m.ctype)
	}
	resp, err := cb.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("posting callback: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// sanitizeHeader makes text safe as a header value: one line, bounded.
func sanitizeHeader(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		s = s[:512]
	}
	return s
}
