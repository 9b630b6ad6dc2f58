package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mailban/mailban/fleet"
)

// FleetConfig joins this host to a fleet that counts failures and shares
// bans, locks and blocks through Redis (or Valkey).
type FleetConfig struct {
	// Host names this host in the decisions it announces; default: the
	// hostname. Every host of a fleet needs its own.
	Host  string      `yaml:"host"`
	Redis RedisConfig `yaml:"redis"`
}

// RedisConfig says how to reach the fleet's Redis.
type RedisConfig struct {
	Address      string `yaml:"address"`       // host:port
	Username     string `yaml:"username"`      // an ACL user; "" for the default user
	Password     string `yaml:"password"`      // or password-file
	PasswordFile string `yaml:"password-file"` // the password on the file's first line
	Database     int    `yaml:"database"`
	// KeyPrefix starts every key of the fleet, as a hash tag ({mailban}:...)
	// so that Redis Cluster keeps them in one slot, as the scripts need.
	KeyPrefix string `yaml:"key-prefix"`
	// Timeout bounds a round trip; a slower Redis is taken as down and this
	// host counts alone until it answers again.
	Timeout Duration   `yaml:"timeout"`
	TLS     *TLSConfig `yaml:"tls"`
}

// TLSConfig turns TLS on for the Redis connection.
type TLSConfig struct {
	CAFile             string `yaml:"ca-file"`   // CA certificates (PEM) to trust; default: the system's
	CertFile           string `yaml:"cert-file"` // client certificate (PEM), with key-file
	KeyFile            string `yaml:"key-file"`
	ServerName         string `yaml:"server-name"`          // default: the address's host
	InsecureSkipVerify bool   `yaml:"insecure-skip-verify"` // for tests only
}

func (f *FleetConfig) check() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: "fleet." + key, Msg: fmt.Sprintf(format, args...)})
	}
	r := &f.Redis
	if r.Address == "" {
		bad("redis.address", "must name the Redis server (host:port)")
	} else if _, _, err := net.SplitHostPort(r.Address); err != nil {
		bad("redis.address", "%q is not host:port (e.g. 127.0.0.1:6379): %v", r.Address, err)
	}
	if r.Password != "" && r.PasswordFile != "" {
		bad("redis.password-file", "give password or password-file, not both")
	}
	if r.Database < 0 {
		bad("redis.database", "cannot be negative")
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = "mailban"
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		bad("redis.key-prefix", "%q: braces are not allowed (mailban puts the prefix in a hash tag itself)", r.KeyPrefix)
	}
	if r.Timeout == 0 {
		r.Timeout = Duration(time.Second)
	}
	if t := r.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			bad("redis.tls.cert-file", "cert-file and key-file go together")
		}
	}
	if strings.ContainsAny(f.Host, " \t\n") {
		bad("host", "%q: no spaces in a host name", f.Host)
	}
	return errs
}

// Options gives the fleet store its settings: it reads the password file
// and the TLS files, and takes the hostname when host is not set.
func (f *FleetConfig) Options() (fleet.Config, error) {
	r := f.Redis
	cfg := fleet.Config{
		Addr:      r.Address,
		Username:  r.Username,
		Password:  r.Password,
		DB:        r.Database,
		KeyPrefix: r.KeyPrefix,
		Host:      f.Host,
		Timeout:   time.Duration(r.Timeout),
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return cfg, fmt.Errorf("fleet.host is not set and the hostname is unknown: %v", err)
		}
		cfg.Host = h
	}
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("read fleet.redis.password-file: %w", err)
		}
		cfg.Password, _, _ = strings.Cut(strings.TrimRight(string(b), "\r\n"), "\n")
	}
	if t := r.TLS; t != nil {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(r.Address)
		}
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return cfg, fmt.Errorf("read fleet.redis.tls.ca-file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return cfg, errors.New("fleet.redis.tls.ca-file: no PEM certificate in it")
			}
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return cfg, fmt.Errorf("load fleet.redis.tls client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	return cfg, nil
}
