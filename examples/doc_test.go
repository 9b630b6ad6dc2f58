// Package examples holds no code: its tests load and check every example
// shipped here (configurations, deployments, the systemd unit, the Grafana
// dashboard) against the code, so that none of them rots.
package examples
