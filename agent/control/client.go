package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
)

// Client speaks to a daemon's control socket.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client for the socket at path. Nothing is dialled
// until a request is made.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &Client{socket: path, http: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Version asks the daemon for its version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	var v Version
	return v, c.do(ctx, http.MethodGet, "/v1/version", nil, &v)
}

// Status asks what the daemon is doing.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Bans lists the bans and blocks in force that pass f.
func (c *Client) Bans(ctx context.Context, f Filter) ([]Entry, error) {
	var es []Entry
	return es, c.do(ctx, http.MethodGet, "/v1/bans?"+f.query().Encode(), nil, &es)
}

// Locks lists the login locks in force that pass f.
func (c *Client) Locks(ctx context.Context, f Filter) ([]Entry, error) {
	var es []Entry
	return es, c.do(ctx, http.MethodGet, "/v1/locks?"+f.query().Encode(), nil, &es)
}

func (f Filter) query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("type", f.Type)
	set("login", f.Login)
	set("reason", f.Reason)
	if f.Network.IsValid() {
		q.Set("net", f.Network.String())
	}
	if f.Permanent {
		q.Set("permanent", "true")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Why asks why an address, network or login is refused.
func (c *Client) Why(ctx context.Context, subject string) (Why, error) {
	var w Why
	return w, c.do(ctx, http.MethodGet, "/v1/why?"+url.Values{"subject": {subject}}.Encode(), nil, &w)
}

// Ban bans req.Target.
func (c *Client) Ban(ctx context.Context, req Request) (Result, error) {
	return c.change(ctx, "ban", req)
}

// Unban lifts the ban on req.Target.
func (c *Client) Unban(ctx context.Context, req Request) (Result, error) {
	return c.change(ctx, "unban", req)
}

// Block blocks req.Target until unblocked, and saves the block.
func (c *Client) Block(ctx context.Context, req Request) (Result, error) {
	return c.change(ctx, "block", req)
}

// Unblock lifts the block on req.Target.
func (c *Client) Unblock(ctx context.Context, req Request) (Result, error) {
	return c.change(ctx, "unblock", req)
}

// Unlock lifts the lock on the login req.Target.
func (c *Client) Unlock(ctx context.Context, req Request) (Result, error) {
	return c.change(ctx, "unlock", req)
}

// Reload makes the daemon read its configuration file again.
func (c *Client) Reload(ctx context.Context) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/reload", nil, &r)
}

func (c *Client) change(ctx context.Context, command string, req Request) (Result, error) {
	var r Result
	return r, c.do(ctx, http.MethodPost, "/v1/"+command, req, &r)
}

// do sends one request. Failures come back as *Error: the daemon's own, or
// CodeUnavailable when it could not be reached, with what to do about it.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://mailban"+path, rd)
	if err != nil {
		return fmt.Errorf("make request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unavailable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &Error{Code: CodeUnavailable, Message: fmt.Sprintf("read the answer from %s: %v", c.socket, err)}
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return &Error{Code: CodeFailed, Message: fmt.Sprintf("%s answered %s: %.200q", c.socket, resp.Status, data)}
		}
		return &e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Code: CodeFailed, Message: fmt.Sprintf("read the answer from %s: %v (is the daemon the same version as this command?)", c.socket, err)}
	}
	return nil
}

func (c *Client) unavailable(err error) error {
	var hint string
	switch {
	case errors.Is(err, os.ErrNotExist):
		hint = "no socket there: is mailban running (systemctl status mailban)? Does control.socket in its configuration name another path (use --socket or --config)?"
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = "nothing answers on it: mailban is not running, or stopped without removing it (systemctl status mailban)"
	case errors.Is(err, os.ErrPermission):
		hint = "permission denied: run as root, or as a member of the group set in control.group"
	case errors.Is(err, context.DeadlineExceeded):
		hint = "no answer in time: the daemon is busy or stuck (try again with a longer --timeout; see its log)"
	default:
		hint = err.Error()
	}
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf("cannot reach mailban at %s: %s", c.socket, hint)}
}
