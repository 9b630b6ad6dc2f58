package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/mailban/mailban/internal/journaldtest"
)

// BenchmarkCommandRun measures lines per second through Command.Run: cat of
// the pre-written log, read from the pipe, each line hashed for its cursor,
// to a consumer that only counts. BenchmarkFileRun reads the same log.
func BenchmarkCommandRun(b *testing.B) {
	path, size := writeBenchLog(b, benchLines)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		c, err := NewCommand(CommandConfig{Name: "bench", Argv: []string{"cat", path}, RestartDelay: time.Hour}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		drain(b, c, benchLines)
	}
	b.ReportMetric(float64(benchLines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkCommandReplaySkip measures how fast a replayed history is
// skipped: a restart of `cat` whose whole output was read before.
func BenchmarkCommandReplaySkip(b *testing.B) {
	path, size := writeBenchLog(b, benchLines)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	var last outputPos
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		last = last.next(sc.Bytes())
	}
	f.Close()
	saved := map[string][]byte{"": last.encode()}
	b.SetBytes(size)
	for b.Loop() {
		// One more line after the history: its arrival marks the end of
		// the skip.
		c, err := NewCommand(CommandConfig{Name: "bench", Argv: []string{"sh", "-c", `cat "$1"; echo end`, "sh", path}, RestartDelay: time.Hour}, saved, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Line, 16)
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, out) }()
		if l := <-out; l.Text != "end" {
			b.Fatalf("first line delivered %q, want end", l.Text)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchLines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// journalJSON is what journalctl prints for a Postfix entry and a Stalwart
// one, with the fields a Journal asks for.
func journalJSON(i int) []byte {
	cursor := fmt.Sprintf("s=3d9eda118e0e4c51937e551d9a78acaf;i=%x;b=d792196cf9c44a6da9a3f35029b132ce;m=215c5b55c;t=661220ce3a070;x=3df752601beda5fb", i)
	ip := fmt.Sprintf("%d.%d.%d.%d", 11+i%200, i/256%256, i%256, 1+i%250)
	if i%4 == 3 {
		return fmt.Appendf(nil, `{"__CURSOR":%q,"__REALTIME_TIMESTAMP":"1795648733290608","__MONOTONIC_TIMESTAMP":"8955213148","_BOOT_ID":"d792196cf9c44a6da9a3f35029b132ce","SYSLOG_IDENTIFIER":"stalwart","_COMM":"stalwart","MESSAGE":"Authentication failed","REMOTEIP":%q,"ACCOUNTNAME":"alice@example.org","LISTENERID":"imap","LOCALPORT":"143"}`, cursor, ip)
	}
	return fmt.Appendf(nil, `{"__CURSOR":%q,"__REALTIME_TIMESTAMP":"1795648733290608","__MONOTONIC_TIMESTAMP":"8955213148","_BOOT_ID":"d792196cf9c44a6da9a3f35029b132ce","SYSLOG_IDENTIFIER":"postfix/smtpd","_COMM":"smtpd","MESSAGE":"warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin"}`, cursor, ip)
}

// BenchmarkJournalEntry measures reading what journalctl prints into Lines
// (a quarter of them Stalwart events); the baseline decodes the same JSON
// into a map, as a generic reader of journal JSON would.
func BenchmarkJournalEntry(b *testing.B) {
	entries := make([][]byte, 1024)
	size := 0
	for i := range entries {
		entries[i] = journalJSON(i)
		size += len(entries[i]) + 1
	}
	b.Run("Journal", func(b *testing.B) {
		j, err := NewJournal(JournalConfig{Name: "bench"}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		out := make(chan Line, len(entries))
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range entries {
				if sent, err := j.entry(context.Background(), e, false, out); !sent || err != nil {
					b.Fatal("entry not delivered", err)
				}
			}
			for range entries {
				<-out
			}
		}
		b.ReportMetric(float64(len(entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("map-baseline", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			for _, e := range entries {
				var m map[string]any
				if err := json.Unmarshal(e, &m); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(entries))*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	})
}

// BenchmarkJournalRun measures entries per second from a real journal:
// journalctl --follow reading entries already written, through Journal.Run.
func BenchmarkJournalRun(b *testing.B) {
	journaldtest.Need(b)
	const n = 20_000
	ident := fmt.Sprintf("mailban-bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("warning: unknown[203.0.113.%d]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin%d", i%250, i)
	}
	journaldtest.Cat(b, ident, lines...)
	journaldtest.WaitEntries(b, n, "SYSLOG_IDENTIFIER="+ident)
	b.ReportAllocs()
	for b.Loop() {
		j, err := NewJournal(JournalConfig{Name: "bench", Matches: []string{"SYSLOG_IDENTIFIER=" + ident}}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		drain(b, j, n)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkWebhook measures signed deliveries of 100 new events each
// through the HTTP receiver, each saved at once (as a checkpoint would);
// the baseline sends the same requests, built and signed alike, to a
// handler that only reads the body.
func BenchmarkWebhook(b *testing.B) {
	const perRequest = 100
	key := []byte(webhookKey)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	send := func(b *testing.B, url string, i int) {
		var body bytes.Buffer
		body.WriteString(`{"events":[`)
		for j := range perRequest {
			if j > 0 {
				body.WriteByte(',')
			}
			n := i*perRequest + j
			body.Write(failed(n%60, fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255), fmt.Sprintf("user%d", j)))
		}
		body.WriteString(`]}`)
		mac := hmac.New(sha256.New, key)
		mac.Write(body.Bytes())
		req, _ := http.NewRequest(http.MethodPost, url, &body)
		req.Header.Set("X-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d: %s", resp.StatusCode, answer)
		}
	}
	b.Run("Webhook", func(b *testing.B) {
		w, err := NewWebhook(WebhookConfig{Name: "bench", Listen: "127.0.0.1:0", Key: key}, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Line, 1024)
		ended := make(chan struct{})
		var runErr error
		go func() { runErr = w.Run(ctx, out); close(ended) }()
		taken := make(chan struct{})
		go func() {
			defer close(taken)
			for {
				select {
				case l := <-out:
					if l.Cursor.Value != nil {
						w.Committed(l.Cursor.Stream, l.Cursor.Value)
					}
				case <-ended:
					return
				}
			}
		}()
		for w.Addr() == nil {
			time.Sleep(time.Millisecond)
		}
		url := "http://" + w.Addr().String() + "/"
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			send(b, url, i)
			i++
		}
		b.ReportMetric(float64(perRequest)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		cancel()
		<-taken
		if runErr != nil {
			b.Fatal(runErr)
		}
	})
	b.Run("read-only-baseline", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
		})}
		served := make(chan struct{})
		go func() { srv.Serve(ln); close(served) }()
		url := "http://" + ln.Addr().String() + "/"
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			send(b, url, i)
			i++
		}
		b.ReportMetric(float64(perRequest)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		srv.Close()
		<-served
	})
}
