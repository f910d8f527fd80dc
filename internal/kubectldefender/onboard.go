package kubectldefender

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entra"
	"github.com/tenantcreds/defender-tenant-operator/internal/tenantgrant"
)

// defaultOnboardRoles are the Microsoft Graph security API roles a new tenant
// requires unless --roles says otherwise: the contract's Graph-first set.
var defaultOnboardRoles = []string{"SecurityIncident.Read.All", "SecurityAlert.Read.All", "ThreatHunting.Read.All"}

// Bounds of --from-csv: a list of customers is a few hundred rows; a file beyond
// these is a mistake or hostile, and is refused before anything is asked.
const (
	maxCSVBytes = 4 << 20
	maxCSVRows  = 10_000
)

// rolePattern is a role name as admission accepts it: no whitespace, at most 256.
var rolePattern = regexp.MustCompile(`^\S{1,256}$`)

// maxRequiredRoles is admission's bound on spec.requiredRoles.
const maxRequiredRoles = 64

type onboardOptions struct {
	*rootOptions
	domain        string
	tenantID      string
	app           string
	name          string
	roles         []string
	resource      string
	fromCSV       string
	apply         bool
	authorityHost string
	// httpClient sends the discovery requests; nil: entra's shared client.
	httpClient *http.Client
	// printed: a YAML document is out, so the next one needs a separator.
	printed bool
}

func newOnboardCommand(root *rootOptions) *cobra.Command {
	o := &onboardOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "onboard (--domain DOMAIN | --tenant-id ID | --from-csv FILE) --app KIND/NAME",
		Short: "Write the DefenderTenant of a customer, found by its domain or tenant ID, and its consent URL",
		Long: `onboard finds a customer's tenant ID and cloud by Entra ID's OpenID discovery
({authority}/{domain or ID}/v2.0/.well-known/openid-configuration, at the sign-in
host of the app's cloud), checks that the tenant is in the app's cloud and that the
app's grants cover the namespace and the tenant, and prints the DefenderTenant as
YAML for kubectl apply -f -, with the admin consent URL to send to the customer as a
comment. With --apply it applies the DefenderTenant server-side instead (field
manager kubectl-defender) and prints the consent URL. Nothing is written without
--apply.

--from-csv reads many customers from a CSV file with a header row. Its columns:
domain or tenantId (one of them in each row), and optionally name, namespace, roles
(separated by spaces or semicolons, or by commas in a quoted cell) and resource; an
empty cell takes the flag's value. A row that fails is reported with its line number and the others go on.`,
		Example: `  kubectl defender onboard --domain contoso.com --app ClusterDefenderApp/partner -n customer-contoso
  kubectl defender onboard --domain contoso.com --app ClusterDefenderApp/partner -n customer-contoso | kubectl apply -f -
  kubectl defender onboard --tenant-id 6e3c1a8e-2f6b-4c4f-9b7e-0d6f2a1c9e11 --name contoso --app partner --apply
  kubectl defender onboard --from-csv customers.csv --app ClusterDefenderApp/partner --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.domain, "domain", "", "a domain verified in the customer's tenant, such as contoso.com")
	f.StringVar(&o.tenantID, "tenant-id", "", "the customer's tenant ID (a GUID)")
	f.StringVar(&o.app, "app", "", "the app that serves the tenant: DefenderApp/NAME (in -n) or ClusterDefenderApp/NAME")
	f.StringVar(&o.name, "name", "", "the DefenderTenant's name; default: the domain's first label, or tenant-<first 8 digits of the ID>")
	f.StringSliceVar(&o.roles, "roles", nil, "spec.requiredRoles; default "+strings.Join(defaultOnboardRoles, ",")+" for Microsoft Graph")
	f.StringVar(&o.resource, "resource", "", "spec.resource; default: Microsoft Graph of the app's cloud")
	f.StringVar(&o.fromCSV, "from-csv", "", "onboard every row of this CSV file (header row: domain or tenantId, and optionally name, namespace, roles, resource)")
	f.BoolVar(&o.apply, "apply", false, "apply the DefenderTenants server-side instead of printing them")
	f.StringVar(&o.authorityHost, "authority-host", "", "send discovery to this host instead of the cloud's sign-in host (an emulator or proxy): one URL, or CLOUD=URL,… as the operator's flag")
	return cmd
}

// onboardRequest is one customer to onboard: from the flags, or a CSV row.
type onboardRequest struct {
	// line is the CSV line the row starts on; 0 for the flags.
	line      int
	domain    string
	tenantID  string
	name      string
	namespace string
	roles     []string
	resource  string
	// invalid is why the row cannot be read, reported in its turn.
	invalid error
}

// asked is what discovery is asked for: the domain or the tenant ID.
func (r *onboardRequest) asked() string {
	if r.domain != "" {
		return r.domain
	}
	return r.tenantID
}

func (o *onboardOptions) run(ctx context.Context) error {
	app, err := parseAppFilter(o.app)
	if err != nil {
		return err
	}
	if app == nil {
		return errors.New("--app is required: the DefenderApp/NAME or ClusterDefenderApp/NAME that serves the tenant")
	}
	authorities, err := o.authorities()
	if err != nil {
		return err
	}
	namespace, err := o.namespace()
	if err != nil {
		return err
	}
	var requests []onboardRequest
	if o.fromCSV != "" {
		if o.domain != "" || o.tenantID != "" || o.name != "" {
			return errors.New("--from-csv takes the domains, tenant IDs and names from the file: drop --domain, --tenant-id and --name")
		}
		if requests, err = readOnboardCSV(o.fromCSV, namespace, o.roles, o.resource); err != nil {
			return err
		}
	} else {
		if (o.domain == "") == (o.tenantID == "") {
			return errors.New("give exactly one of --domain, --tenant-id or --from-csv")
		}
		requests = []onboardRequest{{domain: o.domain, tenantID: o.tenantID, name: o.name, namespace: namespace, roles: o.roles, resource: o.resource}}
	}
	c, err := o.onboardClient()
	if err != nil {
		return err
	}
	b := &onboarder{client: c, app: *app, authorities: authorities, httpClient: o.httpClient,
		apps: map[string]appRead{}, namespaceLabels: map[string]map[string]string{}, claimed: map[client.ObjectKey]int{}}
	if o.fromCSV == "" {
		result, err := b.onboard(ctx, &requests[0], o.apply)
		if err != nil {
			return err
		}
		return o.print(result)
	}
	failed := 0
	for i := range requests {
		req := &requests[i]
		result, err := b.onboard(ctx, req, o.apply)
		if err == nil {
			err = o.print(result)
		}
		if err != nil {
			failed++
			if _, werr := fmt.Fprintf(o.streams.ErrOut, "line %d: %v\n", req.line, err); werr != nil {
				return werr
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d rows of %s failed", failed, len(requests), o.fromCSV)
	}
	return nil
}

// onboardQPS and onboardBurst replace client-go's default of 5 requests a second,
// at which a CSV of a few hundred customers would wait minutes on the client's
// own throttle; the API server's priority and fairness still has the last word.
const (
	onboardQPS   = 50
	onboardBurst = 100
)

// onboardClient is the root's client with a rate fit for a CSV of many rows.
func (o *onboardOptions) onboardClient() (client.Client, error) {
	config, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	config.QPS, config.Burst = onboardQPS, onboardBurst
	c, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the API server: %w", err)
	}
	return c, nil
}

// authorities is where discovery goes: --authority-host, or each cloud's sign-in
// host.
func (o *onboardOptions) authorities() (entra.Authorities, error) {
	if o.authorityHost == "" {
		return nil, nil
	}
	a, err := entra.ParseAuthorities(o.authorityHost)
	if err != nil {
		return nil, fmt.Errorf("--authority-host: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return a, nil
}

// print writes a result: the DefenderTenant as a YAML document after its consent
// URL as a comment, or with --apply one line.
func (o *onboardOptions) print(r *onboardResult) error {
	if r.applied {
		_, err := fmt.Fprintf(o.streams.Out, "defendertenant/%s serverside-applied in namespace %s (tenant %s, %s); consent URL: %s\n",
			r.tenant.GetName(), r.tenant.GetNamespace(), r.tenantID, r.cloud, r.consentURL)
		return err
	}
	doc, err := yaml.Marshal(r.tenant.Object)
	if err != nil {
		return err
	}
	if o.printed {
		if _, err := io.WriteString(o.streams.Out, "---\n"); err != nil {
			return err
		}
	}
	o.printed = true
	found := fmt.Sprintf("tenant %s in cloud %s", r.tenantID, r.cloud)
	if r.domain != "" {
		found = r.domain + ": " + found
	}
	_, err = fmt.Fprintf(o.streams.Out, "# %s.\n# Admin consent URL, for an admin of the customer's tenant:\n# %s\n%s", found, r.consentURL, doc)
	return err
}

// onboarder onboards one customer after another with the same app.
type onboarder struct {
	client      client.Client
	app         appFilter
	authorities entra.Authorities
	httpClient  *http.Client
	// apps holds the app as read for each namespace (a ClusterDefenderApp under
	// ""), and namespaceLabels each namespace's labels, each read once a run.
	apps            map[string]appRead
	namespaceLabels map[string]map[string]string
	// claimed holds the CSV line of each DefenderTenant already onboarded in this
	// run, so that two rows deriving the same name do not overwrite each other.
	claimed map[client.ObjectKey]int
}

// onboardResult is a DefenderTenant ready to print or applied.
type onboardResult struct {
	// domain is the domain asked for, in lower case; empty for a tenant ID.
	domain     string
	tenantID   string
	cloud      v1alpha1.Cloud
	tenant     *unstructured.Unstructured
	consentURL string
	applied    bool
}

// onboardApp is what onboarding needs of the app.
type onboardApp struct {
	spec *v1alpha1.AppSpec
	// grants are a ClusterDefenderApp's; nil for a DefenderApp, which serves its
	// own namespace.
	grants  []v1alpha1.TenantGrant
	cluster bool
}

func (b *onboarder) describeApp() string {
	return string(b.app.kind) + "/" + b.app.name
}

func (b *onboarder) onboard(ctx context.Context, req *onboardRequest, apply bool) (*onboardResult, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	app, err := b.readApp(ctx, req.namespace)
	if err != nil {
		return nil, err
	}
	appCloud := app.spec.CloudOrDefault()
	resource := req.resource
	if resource == "" {
		resource = entra.GraphResource(appCloud)
	}
	roles := req.roles
	if len(roles) == 0 {
		if strings.TrimSuffix(resource, "/") != entra.GraphResource(appCloud) {
			return nil, fmt.Errorf("--resource %s is not Microsoft Graph of cloud %s: give the roles to require with --roles", resource, appCloud)
		}
		roles = defaultOnboardRoles
	}
	authority := b.authorities.Host(appCloud)
	found, err := entra.DiscoverTenant(ctx, b.httpClient, authority, req.asked())
	if err != nil {
		return nil, fmt.Errorf("finding the tenant of %s at %s: %w", req.asked(), authority, err)
	}
	switch {
	case found.Cloud == "":
		return nil, fmt.Errorf("tenant %s (%s) is in a cloud this operator does not serve (cloud_instance_name %q); %s is in cloud %s",
			found.TenantID, req.asked(), found.CloudInstanceName, b.describeApp(), appCloud)
	case found.Cloud != appCloud:
		return nil, fmt.Errorf("tenant %s (%s) is in cloud %s, but %s is in cloud %s: onboard it with an app of cloud %s",
			found.TenantID, req.asked(), found.Cloud, b.describeApp(), appCloud, found.Cloud)
	}
	if app.cluster {
		if err := b.checkGrants(ctx, app.grants, req.namespace, found.TenantID, resource); err != nil {
			return nil, err
		}
	}
	name := req.name
	if name == "" {
		name = derivedName(req.domain, found.TenantID)
	}
	key := client.ObjectKey{Namespace: req.namespace, Name: name}
	if line, dup := b.claimed[key]; dup {
		return nil, fmt.Errorf("DefenderTenant %s/%s is already onboarded from line %d: give this row a name", key.Namespace, key.Name, line)
	}
	if err := b.checkNameFree(ctx, key, found.TenantID); err != nil {
		return nil, err
	}
	tenant := b.tenantObject(key, found.TenantID, resource, roles)
	result := &onboardResult{
		domain:     strings.ToLower(req.domain),
		tenantID:   found.TenantID,
		cloud:      found.Cloud,
		tenant:     tenant,
		consentURL: entra.AdminConsentURL(entra.AuthorityHost(appCloud), found.TenantID, app.spec.ClientID, resource, app.spec.AdminConsentRedirectURI),
	}
	if apply {
		if err := b.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(tenant.DeepCopy()), client.FieldOwner(FieldManager)); err != nil {
			return nil, fmt.Errorf("applying DefenderTenant %s/%s: %s", key.Namespace, key.Name, oneLine(err))
		}
		result.applied = true
	}
	b.claimed[key] = req.line
	return result, nil
}

// validate checks what admission would refuse, so that a dry run fails as --apply
// would, and no request goes out for a row that cannot be onboarded.
func (r *onboardRequest) validate() error {
	switch {
	case r.invalid != nil:
		return r.invalid
	case len(validation.IsDNS1123Label(r.namespace)) > 0:
		return fmt.Errorf("namespace %q is not a namespace name", r.namespace)
	case r.domain != "" && r.tenantID != "":
		return errors.New("give a domain or a tenant ID, not both")
	case r.domain == "" && r.tenantID == "":
		return errors.New("give a domain or a tenant ID")
	case r.tenantID != "" && !entra.IsGUID(r.tenantID):
		return fmt.Errorf("tenant ID %q is not a GUID", r.tenantID)
	}
	if r.name != "" {
		if errs := validation.IsDNS1123Subdomain(r.name); len(errs) > 0 {
			return fmt.Errorf("name %q is not a valid DefenderTenant name: %s", r.name, errs[0])
		}
	}
	if r.resource != "" {
		if _, err := entra.ParseAllowList(r.resource); err != nil || strings.Contains(r.resource, ",") {
			return fmt.Errorf("resource %q is not an https URL", r.resource)
		}
	}
	if len(r.roles) > maxRequiredRoles {
		return fmt.Errorf("%d roles: at most %d", len(r.roles), maxRequiredRoles)
	}
	for _, role := range r.roles {
		if !rolePattern.MatchString(role) {
			return fmt.Errorf("role %q is not a role name", role)
		}
	}
	return nil
}

type appRead struct {
	app *onboardApp
	err error
}

// readApp reads the app: a DefenderApp in namespace, or the ClusterDefenderApp,
// once a run.
func (b *onboarder) readApp(ctx context.Context, namespace string) (*onboardApp, error) {
	key := namespace
	if b.app.kind == v1alpha1.AppKindClusterDefenderApp {
		key = ""
	}
	if r, ok := b.apps[key]; ok {
		return r.app, r.err
	}
	app, err := b.getApp(ctx, namespace)
	b.apps[key] = appRead{app: app, err: err}
	return app, err
}

func (b *onboarder) getApp(ctx context.Context, namespace string) (*onboardApp, error) {
	if b.app.kind == v1alpha1.AppKindClusterDefenderApp {
		var app v1alpha1.ClusterDefenderApp
		if err := b.client.Get(ctx, client.ObjectKey{Name: b.app.name}, &app); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("ClusterDefenderApp %q not found", b.app.name)
			}
			return nil, fmt.Errorf("reading ClusterDefenderApp %q: %s", b.app.name, oneLine(err))
		}
		return &onboardApp{spec: &app.Spec.AppSpec, grants: app.Spec.TenantGrants, cluster: true}, nil
	}
	var app v1alpha1.DefenderApp
	if err := b.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: b.app.name}, &app); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("DefenderApp %q not found in namespace %q (a DefenderApp serves the tenants of its own namespace)", b.app.name, namespace)
		}
		return nil, fmt.Errorf("reading DefenderApp %s/%s: %s", namespace, b.app.name, oneLine(err))
	}
	return &onboardApp{spec: &app.Spec.AppSpec}, nil
}

// checkGrants applies the operator's own rule (tenantgrant.Evaluate) to the
// namespace's current labels, so that onboard refuses exactly the tenants the
// operator would refuse with AppNotAllowed.
func (b *onboarder) checkGrants(ctx context.Context, grants []v1alpha1.TenantGrant, namespace, tenantID, resource string) error {
	labels, ok := b.namespaceLabels[namespace]
	if !ok {
		// Metadata only: the labels are all a grant looks at.
		ns := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}}
		if err := b.client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %q not found", namespace)
			}
			return fmt.Errorf("reading namespace %q for the grants of %s: %s", namespace, b.describeApp(), oneLine(err))
		}
		labels = ns.Labels
		b.namespaceLabels[namespace] = labels
	}
	verdict := tenantgrant.Evaluate(grants, namespace, labels, tenantID, resource)
	switch {
	case verdict.Allowed:
		return nil
	case verdict.ResourceRefused:
		return fmt.Errorf("the tenantGrants of %s cover namespace %s and tenant %s only for %s, not %s",
			b.describeApp(), namespace, tenantID, strings.Join(verdict.Resources, ", "), resource)
	default:
		return fmt.Errorf("no tenantGrants entry of %s covers namespace %s and tenant %s: add one to the app, or onboard into a namespace it covers",
			b.describeApp(), namespace, tenantID)
	}
}

// checkNameFree refuses a name taken by a DefenderTenant of another tenant ID:
// applying would move that DefenderTenant to this customer.
func (b *onboarder) checkNameFree(ctx context.Context, key client.ObjectKey, tenantID string) error {
	var existing v1alpha1.DefenderTenant
	err := b.client.Get(ctx, key, &existing)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading DefenderTenant %s/%s: %s", key.Namespace, key.Name, oneLine(err))
	case !strings.EqualFold(existing.Spec.TenantID, tenantID):
		return fmt.Errorf("DefenderTenant %s/%s already exists for tenant %s: choose another name", key.Namespace, key.Name, existing.Spec.TenantID)
	}
	return nil
}

// tenantObject is the DefenderTenant with only the fields onboard decides: what
// kubectl apply -f - accepts, and what a server-side apply should own.
func (b *onboarder) tenantObject(key client.ObjectKey, tenantID, resource string, roles []string) *unstructured.Unstructured {
	requiredRoles := make([]any, len(roles))
	for i, r := range roles {
		requiredRoles[i] = r
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"tenantID":      tenantID,
			"appRef":        map[string]any{"kind": string(b.app.kind), "name": b.app.name},
			"resource":      resource,
			"requiredRoles": requiredRoles,
		},
	}}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("DefenderTenant"))
	u.SetNamespace(key.Namespace)
	u.SetName(key.Name)
	return u
}

// notInAName is what a DefenderTenant name cannot hold.
var notInAName = regexp.MustCompile(`[^a-z0-9-]+`)

// derivedName is the domain's first DNS label (contoso for contoso.onmicrosoft.com),
// or tenant-<first 8 hex digits> for a tenant ID.
func derivedName(domain, tenantID string) string {
	if domain != "" {
		label, _, _ := strings.Cut(strings.ToLower(domain), ".")
		label = strings.Trim(notInAName.ReplaceAllString(label, "-"), "-")
		if len(label) > validation.DNS1123LabelMaxLength {
			label = strings.TrimRight(label[:validation.DNS1123LabelMaxLength], "-")
		}
		if label != "" {
			return label
		}
	}
	return "tenant-" + strings.ToLower(tenantID[:8])
}

// oneLine keeps an API error on the one line errors are printed on.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// CSV columns, compared without regard to case.
const (
	columnDomain    = "domain"
	columnTenantID  = "tenantid"
	columnName      = "name"
	columnNamespace = "namespace"
	columnRoles     = "roles"
	columnResource  = "resource"
)

var csvColumns = []string{columnDomain, columnTenantID, columnName, columnNamespace, columnRoles, columnResource}

// readOnboardCSV reads the rows of path; empty cells take the flags' values. The
// whole file is checked for its bounds and its header before any row is onboarded.
func readOnboardCSV(path, namespace string, roles []string, resource string) ([]onboardRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--from-csv: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	data, err := io.ReadAll(io.LimitReader(f, maxCSVBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--from-csv: %w", err)
	}
	if len(data) > maxCSVBytes {
		return nil, fmt.Errorf("--from-csv %s: the file is over %d MiB; split it", path, maxCSVBytes>>20)
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.TrimLeadingSpace = true
	// A row of the wrong width is that row's failure, not the file's.
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("--from-csv %s: the file is empty; its first row names the columns (domain or tenantId, name, namespace, roles, resource)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--from-csv %s: %w", path, err)
	}
	index := map[string]int{}
	for i, h := range header {
		column := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if !slices.Contains(csvColumns, column) {
			return nil, fmt.Errorf("--from-csv %s: unknown column %q; the columns are domain, tenantId, name, namespace, roles, resource", path, h)
		}
		if _, dup := index[column]; dup {
			return nil, fmt.Errorf("--from-csv %s: column %q is given twice", path, h)
		}
		index[column] = i
	}
	_, hasDomain := index[columnDomain]
	_, hasTenantID := index[columnTenantID]
	if !hasDomain && !hasTenantID {
		return nil, fmt.Errorf("--from-csv %s: the header names neither a domain nor a tenantId column", path)
	}
	var requests []onboardRequest
	for {
		record, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("--from-csv %s: %w", path, err)
		}
		if len(requests) == maxCSVRows {
			return nil, fmt.Errorf("--from-csv %s: more than %d rows; split the file", path, maxCSVRows)
		}
		line, _ := r.FieldPos(0)
		if len(record) != len(header) {
			requests = append(requests, onboardRequest{line: line, invalid: fmt.Errorf("%d cells, but the header names %d columns", len(record), len(header))})
			continue
		}
		cell := func(column string) string {
			if i, ok := index[column]; ok {
				return strings.TrimSpace(record[i])
			}
			return ""
		}
		req := onboardRequest{
			line:      line,
			domain:    cell(columnDomain),
			tenantID:  cell(columnTenantID),
			name:      cell(columnName),
			namespace: cell(columnNamespace),
			roles:     splitRoles(cell(columnRoles)),
			resource:  cell(columnResource),
		}
		if req.namespace == "" {
			req.namespace = namespace
		}
		if len(req.roles) == 0 {
			req.roles = roles
		}
		if req.resource == "" {
			req.resource = resource
		}
		requests = append(requests, req)
	}
	if len(requests) == 0 {
		return nil, fmt.Errorf("--from-csv %s: no rows after the header", path)
	}
	return requests, nil
}

// splitRoles reads a roles cell: names separated by white space or semicolons,
// or by commas in a quoted cell, as a spreadsheet writes a list.
func splitRoles(cell string) []string {
	return strings.FieldsFunc(cell, func(r rune) bool { return r == ';' || r == ',' || unicode.IsSpace(r) })
}
