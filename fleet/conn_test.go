package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/fleet/redistest"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
	"github.com/mailban/mailban/rules/rulestest"
)

// countsOnce makes an engine on a store built from cfg and checks that a
// failure is counted in Redis.
func countsOnce(t *testing.T, cfg Config) error {
	t.Helper()
	clock := rulestest.NewFakeClock(rulestest.T0)
	cfg.Clock = clock
	e, err := rules.NewEngine(rules.Config{IP: rules.Threshold{Count: 2, Period: time.Hour}, BanFor: time.Hour}, clock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := e.UseStore(s); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resync(context.Background(), e); err != nil {
		return err
	}
	ev := &parsers.Event{Kind: parsers.AuthFailure, Addr: netip.MustParseAddr("203.0.113.1"), Attempts: 1, Time: rulestest.T0}
	if _, err := e.ObserveBatch([]*parsers.Event{ev}, nil); err != nil {
		return err
	}
	if _, err := s.Resync(context.Background(), e); err != nil {
		return err
	}
	ds, err := e.ObserveBatch([]*parsers.Event{ev}, nil)
	if err != nil {
		return err
	}
	if len(ds) != 1 || ds[0].Action != rules.Ban {
		t.Fatalf("two failures in Redis decided %v, want a ban", ds)
	}
	return nil
}

// An ACL user limited to the fleet's keys and the commands the README
// lists can do everything mailban does; a wrong password cannot.
func TestACLUser(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Extra: []string{
		"user mailban on >s3cret ~{acl}:* +@read +@write +@scripting +@stream +ping +info",
	}})
	cfg := Config{Addr: srv.Addr(), Username: "mailban", Password: "s3cret", KeyPrefix: "acl", Host: "h1", Timeout: 2 * time.Second}
	if err := countsOnce(t, cfg); err != nil {
		t.Fatalf("as the ACL user: %v", err)
	}
	cfg.Password = "wrong"
	if err := countsOnce(t, cfg); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("with a wrong password: %v, want WRONGPASS", err)
	}
	cfg.Password, cfg.KeyPrefix = "s3cret", "other"
	if err := countsOnce(t, cfg); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("outside its keys: %v, want NOPERM", err)
	}
}

// The store speaks TLS to a server whose certificate a private CA signed.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	files, pool := makeCerts(t, dir)
	srv := redistest.Start(t, redistest.Options{TLS: files})
	cfg := Config{Addr: srv.TLSAddr(), KeyPrefix: "tls", Host: "h1", Timeout: 2 * time.Second,
		TLS: &tls.Config{RootCAs: pool, ServerName: "redis.test", MinVersion: tls.VersionTLS12}}
	if err := countsOnce(t, cfg); err != nil {
		t.Fatalf("over TLS: %v", err)
	}
	cfg.TLS = &tls.Config{ServerName: "redis.test", MinVersion: tls.VersionTLS12} // the system's CAs do not know it
	if err := countsOnce(t, cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with an unknown CA: %v, want a certificate error", err)
	}
}

func makeCerts(t *testing.T, dir string) (*redistest.TLSFiles, *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"redis.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files := &redistest.TLSFiles{
		Cert: write("server.pem", "CERTIFICATE", der),
		Key:  write("server.key", "EC PRIVATE KEY", keyDER),
		CA:   write("ca.pem", "CERTIFICATE", caDER),
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return files, pool
}

// A Redis slower than the timeout is taken as down: the burst counts on
// this host. When the late reply shows (through the host's burst marker)
// that Redis did apply the burst after all, Resync does not hand that
// count back: the failures count once.
func TestSlowRedisCountsOnce(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Extra: []string{"enable-debug-command local"}})
	clock := rulestest.NewFakeClock(rulestest.T0)
	e, err := rules.NewEngine(rules.Config{IP: rules.Threshold{Count: 5, Period: time.Hour}, BanFor: time.Hour}, clock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Addr: srv.Addr(), KeyPrefix: "slow", Host: "h1", Timeout: 300 * time.Millisecond, Clock: clock}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	connect(t, s, e)
	fail := func(n int) ([]rules.Decision, error) {
		var evs []*parsers.Event
		for range n {
			evs = append(evs, &parsers.Event{Kind: parsers.AuthFailure, Addr: netip.MustParseAddr("203.0.113.7"), Attempts: 1, Time: rulestest.T0})
		}
		return e.ObserveBatch(evs, nil)
	}

	wait, err := srv.Stall(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := fail(3)
	if err == nil || len(ds) != 0 {
		t.Fatalf("a burst to a sleeping Redis: %v, %v; want a timeout and no decision", ds, err)
	}
	if s.Up() || e.Stats().Addresses != 1 {
		t.Fatalf("after the timeout: up %v, %+v; want down and the burst counted here", s.Up(), e.Stats())
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	ds, err = s.Resync(context.Background(), e)
	if err != nil || len(ds) != 0 {
		t.Fatalf("Resync: %v, %v", ds, err)
	}
	if n := s.Stats().LostReplies; n != 1 {
		t.Fatalf("%d bursts found applied despite a lost reply, want 1", n)
	}
	if e.Stats().Addresses != 0 {
		t.Fatalf("the local count was not taken back: %+v", e.Stats())
	}
	if ds, err := fail(1); err != nil || len(ds) != 0 {
		t.Fatalf("the fourth failure: %v, %v; want no ban", ds, err)
	}
	if ds, err := fail(1); err != nil || len(ds) != 1 || ds[0].Reason != "5 failures in 1h (threshold 5/1h)" {
		t.Fatalf("the fifth failure: %v, %v; want the ban", ds, err)
	}
}

// The engine's methods stay safe for concurrent use with a store: bursts
// from two goroutines, hook checks and an operator's commands, under -race.
// Every address reaches its threshold exactly once.
func TestConcurrentUseWithStore(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clock := rulestest.NewFakeClock(rulestest.T0)
	e, err := rules.NewEngine(rules.Config{IP: rules.Threshold{Count: 3, Period: time.Hour}, BanFor: rules.Week,
		Login: rules.Threshold{Count: 50, Period: time.Hour}, LockFor: time.Hour}, clock)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, srv, "conc", "h1", clock)
	connect(t, s, e)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); s.Run(ctx) }()
	defer func() { cancel(); <-runDone }()

	const workers, bursts = 2, 20
	bans := make([]map[netip.Prefix]int, workers)
	done := make(chan struct{})
	for w := range workers {
		bans[w] = map[netip.Prefix]int{}
		go func() {
			defer func() { done <- struct{}{} }()
			for b := range bursts {
				var evs []*parsers.Event
				for i := range 30 {
					evs = append(evs, &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: rulestest.T0,
						Addr: netip.AddrFrom4([4]byte{192, 0, byte(w), byte(i)}), Login: fmt.Sprint("user", b%5)})
				}
				ds, err := e.ObserveBatch(evs, nil)
				if err != nil {
					t.Error(err)
					return
				}
				for _, d := range ds {
					if d.Action == rules.Ban {
						bans[w][d.Prefix]++
					}
				}
			}
		}()
	}
	go func() {
		defer func() { done <- struct{}{} }()
		for i := range 200 {
			e.Check(netip.AddrFrom4([4]byte{192, 0, 0, byte(i)}), "user1")
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
			e.BlockManual(p, "")
			e.UnblockManual(p)
			e.Active()
		}
	}()
	for range workers + 1 {
		<-done
	}
	for w := range workers {
		if len(bans[w]) != 30 {
			t.Errorf("worker %d: %d addresses banned, want 30", w, len(bans[w]))
		}
		for p, n := range bans[w] {
			if n != 1 {
				t.Errorf("%s banned %d times", p, n)
			}
		}
	}
}
