// Package localcluster runs what `make demo`, `make bench` and the end-to-end tests
// need on a developer's machine without Docker: a throwaway control plane (etcd and
// kube-apiserver, started by controller-runtime's envtest, and, when a test needs
// its garbage collector, kube-controller-manager) and the operator and emulator
// binaries as child processes.
package localcluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Cluster is a running control plane: etcd and kube-apiserver, with RBAC enforced and
// service-account tokens enabled, but no scheduler or nodes, and no controller-manager
// unless StartControllerManager starts one. Its state lives in a temporary directory
// that Stop removes.
type Cluster struct {
	env *envtest.Environment
	// certDir holds kube-apiserver's serving certificate, client CA and
	// service-account signing key. The Cluster owns it, rather than envtest, so that
	// it outlives a StopAPIServer: see StartAPIServer.
	certDir string
	// Admin is a cluster-admin (system:masters) client configuration.
	Admin *rest.Config
}

// Start starts a control plane and installs the CRDs found in crdDirs, if any. The
// kube-apiserver and etcd binaries are taken from $KUBEBUILDER_ASSETS, which
// hack/envtest-binaries.sh prints.
func Start(crdDirs ...string) (*Cluster, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: it must name the directory holding kube-apiserver and etcd, " +
			"as printed by hack/envtest-binaries.sh (the Makefile sets it)")
	}
	certDir, err := os.MkdirTemp("", "localcluster-apiserver-")
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: len(crdDirs) > 0,
	}
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.CertDir = certDir
	// On SIGTERM kube-apiserver stops listening at once, but by default then waits up
	// to its request timeout (60s) for open connections, such as a controller's
	// watches, to close. With this flag it drains only the requests in flight and
	// then gives open connections 2s, so that stopping (in Stop and StopAPIServer)
	// takes seconds, not as long as clients stay connected.
	apiServer.Configure().Set("shutdown-send-retry-after", "true")
	cfg, err := env.Start()
	if err != nil {
		// Start may fail after etcd is up, e.g. on an invalid CRD: do not leave it running.
		_ = env.Stop()
		_ = os.RemoveAll(certDir)
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	return &Cluster{env: env, certDir: certDir, Admin: cfg}, nil
}

// Stop stops kube-apiserver and etcd and removes their data.
func (c *Cluster) Stop() error {
	err := c.env.Stop()
	return errors.Join(err, os.RemoveAll(c.certDir))
}

// StopAPIServer stops kube-apiserver only, as a control-plane upgrade or crash
// does: etcd, and so every object, stays. Clients get connection errors until
// StartAPIServer.
func (c *Cluster) StopAPIServer() error {
	if err := c.env.ControlPlane.APIServer.Stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same
// address, with the same serving certificate, client CA and service-account signing
// key, so that Admin, kubeconfigs written earlier and ServiceAccount tokens issued
// earlier keep working. It returns once the API server reports healthy.
//
// envtest can only do this because the Cluster owns the certificate directory: with
// envtest's default, a temporary directory that Stop deletes, a restarted API server
// gets a new CA and a new signing key, and every existing client is locked out.
func (c *Cluster) StartAPIServer() error {
	if err := c.env.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("starting kube-apiserver again: %w", err)
	}
	return nil
}

// AddUser provisions a user who authenticates with a client certificate and belongs
// to groups, and returns a client configuration for it; WriteKubeconfig writes one
// for a process. The user may do nothing until RBAC grants it something.
//
// Admin is in system:masters, which kube-apiserver neither authorizes against RBAC
// nor queues in API Priority and Fairness. A client measured as it would run in a
// cluster, such as the operator in hack/bench, needs an identity that goes through
// both; a certificate, unlike a ServiceAccount token, needs no namespace or
// ServiceAccount first and does not expire during a long run.
func (c *Cluster) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", name, err)
	}
	return rest.CopyConfig(u.Config()), nil
}

// WriteKubeconfig writes a kubeconfig file for cfg, whose credentials may be a client
// certificate or a bearer token. The file is readable by its owner only, as kubectl
// would write it, since it holds credentials.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["local"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
	}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "local"}
	kc.CurrentContext = "local"
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// FreeLocalAddr returns a loopback address with a port that was free a moment ago,
// for servers that do not report the port they picked for ":0", such as the
// operator's metrics and probe endpoints. Another process could take the port in
// between; on a developer machine or a CI runner that is rare enough.
func FreeLocalAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}
