// Command kubeapi runs a real kube-apiserver on an embedded etcd, for the
// export tests' server-side dry runs (scripts/kubeapi.sh builds it from the
// Go module proxy into .cache/bin). Nothing else of a cluster runs: no
// scheduler, no controllers, no kubelet.
//
//	kubeapi -data DIR -- <kube-apiserver flags>
//
// etcd listens on a free 127.0.0.1 port and keeps its data in DIR/etcd;
// --etcd-servers is added to the apiserver's flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kubeapi:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kubeapi", flag.ContinueOnError)
	data := fs.String("data", "", "directory for etcd's data (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" {
		return errors.New("-data is required")
	}
	etcdURL, err := startEtcd(filepath.Join(*data, "etcd"))
	if err != nil {
		return err
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(append([]string{"--etcd-servers=" + etcdURL}, fs.Args()...))
	return cmd.Execute()
}

// startEtcd starts an embedded single-member etcd on loopback ports and
// returns its client URL once it serves.
func startEtcd(dir string) (string, error) {
	client, err := freeURL()
	if err != nil {
		return "", err
	}
	peer, err := freeURL()
	if err != nil {
		return "", err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return "", fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return "", errors.New("etcd did not become ready within 60s")
	}
	return client.String(), nil
}

// freeURL returns http://127.0.0.1:<a port free right now>.
func freeURL() (*url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
