package entraemu_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tenantcreds/defender-tenant-operator/api/v1alpha1"
	"github.com/tenantcreds/defender-tenant-operator/internal/entraemu"
)

const (
	homeTenantID  = "2f1b0c4d-7a6e-4b3c-9d8e-1f0a2b3c4d5e"
	objectID      = "7d3c5a9e-1b2c-4d3e-8f4a-5b6c7d8e9f01"
	otherClientID = "4c2a9e71-3b5d-4f6e-8a9b-0c1d2e3f4a5b"
	graphPublic   = "https://graph.microsoft.com"
)

// graphFixture is the fixture with the app registered in its home tenant with
// appCert, and Graph of the Public cloud served beside the sign-in host.
type graphFixture struct {
	*fixture
	graph string
	cert  *x509.Certificate // the app's registered certificate, of appKey
}

func newGraphFixture(t *testing.T) *graphFixture {
	t.Helper()
	f := newFixture(t)
	f.emu.RegisterApplication(entraemu.Application{ObjectID: objectID, ClientID: clientID, HomeTenantID: homeTenantID})
	cert := appCert(t)
	f.emu.AddCertificate(clientID, cert)
	return &graphFixture{fixture: f, graph: f.serve(t, f.emu.Graph(v1alpha1.CloudPublic)), cert: cert}
}

// certToken requests a token in tenant for resource, signed with key as cert.
func (f *graphFixture) certToken(t *testing.T, tenant, client, resource string, key *rsa.PrivateKey, cert *x509.Certificate) response {
	t.Helper()
	c := certClaims(f.srv.URL, tenant)
	c.Issuer, c.Subject = client, client
	c.NotBefore, c.IssuedAt = jwt.NewNumericDate(f.clock.Now()), jwt.NewNumericDate(f.clock.Now())
	c.Expiry = jwt.NewNumericDate(f.clock.Now().Add(10 * time.Minute))
	form := assertionForm(sign(t, key, jose.RS256, "", s256Header(cert), c), "client_id", client, "scope", resource+"/.default")
	return f.post(t, v2Path(tenant), form)
}

// graphToken is a Graph token of the app in its home tenant, signed with appCert.
func (f *graphFixture) graphToken(t *testing.T) string {
	t.Helper()
	return accessToken(t, f.certToken(t, homeTenantID, clientID, graphPublic, appKey(), f.cert))
}

func accessToken(t *testing.T, resp response) string {
	t.Helper()
	if resp.status != http.StatusOK {
		t.Fatalf("token request: status %d, body %s", resp.status, resp.body)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatal(err)
	}
	return body.AccessToken
}

// proofClaims are the claims of Microsoft's proof sample, from the fixture clock.
func (f *graphFixture) proofClaims() jwt.Claims {
	now := f.clock.Now()
	return jwt.Claims{
		Audience:  jwt.Audience{"00000002-0000-0000-c000-000000000000"},
		Issuer:    objectID,
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(10 * time.Minute)),
	}
}

func (f *graphFixture) proof(t *testing.T) string {
	t.Helper()
	return sign(t, appKey(), jose.RS256, "", sha1Header(f.cert), f.proofClaims())
}

func addKeyBody(cert *x509.Certificate, proof string) map[string]any {
	return map[string]any{
		"keyCredential": map[string]any{
			"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.StdEncoding.EncodeToString(cert.Raw),
		},
		"passwordCredential": nil,
		"proof":              proof,
	}
}

func (f *graphFixture) call(t *testing.T, action, object, token string, body any) response {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, f.graph+"/v1.0/applications/"+object+"/"+action, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return f.do(t, req)
}

type graphError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			Date            string `json:"date"`
			RequestID       string `json:"request-id"`
			ClientRequestID string `json:"client-request-id"`
		} `json:"innerError"`
	} `json:"error"`
}

func TestGraphRollsTheAppsOwnKey(t *testing.T) {
	f := newGraphFixture(t)
	f.emu.SetReplicationDelay(2 * time.Minute)
	next := newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(0, 3, 0))

	resp := f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next, f.proof(t)))
	if resp.status != http.StatusOK {
		t.Fatalf("addKey: status %d, body %s", resp.status, resp.body)
	}
	var added struct {
		KeyID string  `json:"keyId"`
		Type  string  `json:"type"`
		Usage string  `json:"usage"`
		Key   *string `json:"key"`
	}
	if err := json.Unmarshal(resp.body, &added); err != nil {
		t.Fatal(err)
	}
	if !guidRE.MatchString(added.KeyID) || added.Type != "AsymmetricX509Cert" || added.Usage != "Verify" || added.Key != nil {
		t.Fatalf("addKey answered %s", resp.body)
	}
	keys := f.emu.KeyCredentials(clientID)
	if len(keys) != 2 || keys[1].KeyID != added.KeyID || keys[1].SHA1Thumbprint != upperHex(next) {
		t.Fatalf("key credentials after addKey: %+v", keys)
	}

	// Until the new key has replicated, the token endpoint does not know it.
	if resp := f.certToken(t, homeTenantID, clientID, graphPublic, otherKey(), next); resp.status != http.StatusUnauthorized ||
		!strings.Contains(string(resp.body), "AADSTS700027") {
		t.Fatalf("token with the new key before replication: status %d, body %s", resp.status, resp.body)
	}
	f.clock.SetTime(t0.Add(2 * time.Minute))
	accessToken(t, f.certToken(t, homeTenantID, clientID, graphPublic, otherKey(), next))

	// The new key proves possession to remove the old one.
	oldKeyID := keys[0].KeyID
	proof := sign(t, otherKey(), jose.RS256, "", sha1Header(next), f.proofClaims())
	token := accessToken(t, f.certToken(t, homeTenantID, clientID, graphPublic, otherKey(), next))
	resp = f.call(t, "removeKey", objectID, token, map[string]any{"keyId": oldKeyID, "proof": proof})
	if resp.status != http.StatusNoContent {
		t.Fatalf("removeKey: status %d, body %s", resp.status, resp.body)
	}
	keys = f.emu.KeyCredentials(clientID)
	if len(keys) != 1 || keys[0].KeyID != added.KeyID {
		t.Fatalf("key credentials after removeKey: %+v", keys)
	}
	calls := f.emu.GraphCalls(objectID)
	if len(calls) != 2 || calls[0] != (entraemu.GraphCall{Action: "addKey", Status: 200, KeyID: added.KeyID}) ||
		calls[1] != (entraemu.GraphCall{Action: "removeKey", Status: 204, KeyID: oldKeyID}) {
		t.Fatalf("Graph calls: %+v", calls)
	}
}

func TestGraphRefusals(t *testing.T) {
	next := func(t *testing.T) *x509.Certificate {
		return newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(0, 3, 0))
	}
	tests := []struct {
		name string
		// do returns the answer to a call the test spoils one way.
		do         func(t *testing.T, f *graphFixture) response
		wantStatus int
		wantCode   string
	}{{
		name: "no bearer token",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "addKey", objectID, "", addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 401, wantCode: "InvalidAuthenticationToken",
	}, {
		name: "a token for the Defender XDR API",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.Grant(homeTenantID, clientID, xdrAPI)
			token := accessToken(t, f.certToken(t, homeTenantID, clientID, xdrAPI, appKey(), f.cert))
			return f.call(t, "addKey", objectID, token, addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 401, wantCode: "InvalidAuthenticationToken",
	}, {
		name: "an expired token",
		do: func(t *testing.T, f *graphFixture) response {
			token := f.graphToken(t)
			f.clock.SetTime(t0.Add(2 * time.Hour))
			return f.call(t, "addKey", objectID, token, addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 401, wantCode: "InvalidAuthenticationToken",
	}, {
		name: "a token not signed by Entra",
		do: func(t *testing.T, f *graphFixture) response {
			token := sign(t, otherKey(), jose.RS256, "", nil, map[string]any{
				"aud": graphPublic, "tid": homeTenantID, "appid": clientID,
				"nbf": t0.Unix(), "exp": t0.Add(time.Hour).Unix(),
			})
			return f.call(t, "addKey", objectID, token, addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 401, wantCode: "InvalidAuthenticationToken",
	}, {
		name: "a token of another tenant",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.Grant(tenantID, clientID, graphPublic)
			f.emu.AddTenant(tenantID)
			token := accessToken(t, f.certToken(t, tenantID, clientID, graphPublic, appKey(), f.cert))
			return f.call(t, "addKey", objectID, token, addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 404, wantCode: "Request_ResourceNotFound",
	}, {
		name: "another app of the home tenant",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.AddCertificate(otherClientID, f.cert)
			f.emu.Grant(homeTenantID, otherClientID, graphPublic)
			token := accessToken(t, f.certToken(t, homeTenantID, otherClientID, graphPublic, appKey(), f.cert))
			return f.call(t, "addKey", objectID, token, addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 403, wantCode: "Authorization_RequestDenied",
	}, {
		name: "an unknown object",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "addKey", "00000000-0000-4000-8000-000000000000", f.graphToken(t), addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 404, wantCode: "Request_ResourceNotFound",
	}, {
		name: "a proof for Microsoft Graph's application ID",
		do: func(t *testing.T, f *graphFixture) response {
			c := f.proofClaims()
			c.Audience = jwt.Audience{"00000003-0000-0000-c000-000000000000"}
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), sign(t, appKey(), jose.RS256, "", sha1Header(f.cert), c)))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a proof issued by the client ID",
		do: func(t *testing.T, f *graphFixture) response {
			c := f.proofClaims()
			c.Issuer = clientID
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), sign(t, appKey(), jose.RS256, "", sha1Header(f.cert), c)))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a proof valid for 11 minutes",
		do: func(t *testing.T, f *graphFixture) response {
			c := f.proofClaims()
			c.Expiry = jwt.NewNumericDate(t0.Add(11 * time.Minute))
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), sign(t, appKey(), jose.RS256, "", sha1Header(f.cert), c)))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "an expired proof",
		do: func(t *testing.T, f *graphFixture) response {
			proof := f.proof(t)
			f.clock.SetTime(t0.Add(16 * time.Minute))
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), proof))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a proof signed by the key being added",
		do: func(t *testing.T, f *graphFixture) response {
			n := next(t)
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(n, sign(t, otherKey(), jose.RS256, "", sha1Header(n), f.proofClaims())))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a proof naming the registered certificate, signed by another key",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), sign(t, otherKey(), jose.RS256, "", sha1Header(f.cert), f.proofClaims())))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a PS256 proof",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), sign(t, appKey(), jose.PS256, "", sha1Header(f.cert), f.proofClaims())))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "no proof",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), ""))
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}, {
		name: "a removeKey of an unknown key",
		do: func(t *testing.T, f *graphFixture) response {
			return f.call(t, "removeKey", objectID, f.graphToken(t), map[string]any{"keyId": "00000000-0000-4000-8000-000000000001", "proof": f.proof(t)})
		},
		wantStatus: 404, wantCode: "Request_ResourceNotFound",
	}, {
		name: "switched to forbidden",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.SetGraphFailure(objectID, entraemu.GraphForbidden())
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 403, wantCode: "Authorization_RequestDenied",
	}, {
		name: "switched to not found",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.SetGraphFailure(objectID, entraemu.GraphNotFound(objectID))
			return f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next(t), f.proof(t)))
		},
		wantStatus: 404, wantCode: "Request_ResourceNotFound",
	}, {
		name: "switched to a rejected proof",
		do: func(t *testing.T, f *graphFixture) response {
			f.emu.SetGraphFailure(objectID, entraemu.GraphBadProof())
			return f.call(t, "removeKey", objectID, f.graphToken(t), map[string]any{"keyId": f.emu.KeyCredentials(clientID)[0].KeyID, "proof": f.proof(t)})
		},
		wantStatus: 401, wantCode: "Authentication_MissingOrMalformed",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newGraphFixture(t)
			resp := tt.do(t, f)
			var body graphError
			if err := json.Unmarshal(resp.body, &body); err != nil {
				t.Fatalf("status %d, body %q is not a Graph error: %v", resp.status, resp.body, err)
			}
			if resp.status != tt.wantStatus || body.Error.Code != tt.wantCode || body.Error.Message == "" {
				t.Fatalf("status %d, body %s; want %d %s", resp.status, resp.body, tt.wantStatus, tt.wantCode)
			}
			inner := body.Error.InnerError
			if !guidRE.MatchString(inner.RequestID) || inner.ClientRequestID == "" || resp.header.Get("request-id") != inner.RequestID {
				t.Errorf("innerError %+v, request-id header %q", inner, resp.header.Get("request-id"))
			}
			if _, err := time.Parse("2006-01-02T15:04:05", inner.Date); err != nil {
				t.Errorf("innerError.date %q: %v", inner.Date, err)
			}
			if keys := f.emu.KeyCredentials(clientID); len(keys) != 1 || keys[0].SHA1Thumbprint != upperHex(f.cert) {
				t.Errorf("a refused call changed the key credentials: %+v", keys)
			}
		})
	}
}

func TestGraphOfEachCloudTakesOnlyItsOwnTokens(t *testing.T) {
	f := newGraphFixture(t)
	high := f.serve(t, f.emu.Graph(v1alpha1.CloudUSGovHigh))
	if f.emu.Graph(v1alpha1.CloudUSGov) != f.emu.Graph(v1alpha1.CloudPublic) {
		t.Error("USGov does not share Public's Graph")
	}
	f.graph = high
	resp := f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(f.cert, f.proof(t)))
	if resp.status != http.StatusUnauthorized || !strings.Contains(string(resp.body), "InvalidAuthenticationToken") {
		t.Fatalf("a commercial Graph token at graph.microsoft.us: status %d, body %s", resp.status, resp.body)
	}
}

// The replication delay holds for a certificate uploaded by a person too, and only
// for keys added after it was set.
func TestReplicationDelayAppliesToNewKeys(t *testing.T) {
	f := newGraphFixture(t)
	f.emu.SetReplicationDelay(time.Minute)
	accessToken(t, f.certToken(t, homeTenantID, clientID, graphPublic, appKey(), f.cert))
	uploaded := newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(0, 3, 0))
	f.emu.AddCertificate(clientID, uploaded)
	resp := f.certToken(t, homeTenantID, clientID, graphPublic, otherKey(), uploaded)
	var body entraError
	_ = json.Unmarshal(resp.body, &body)
	if resp.status != http.StatusUnauthorized || len(body.Codes) != 1 || body.Codes[0] != 700027 {
		t.Fatalf("before replication: status %d, body %s", resp.status, resp.body)
	}
	f.clock.SetTime(t0.Add(time.Minute))
	accessToken(t, f.certToken(t, homeTenantID, clientID, graphPublic, otherKey(), uploaded))
}

// An app given objectID and homeTenantID in the config is Graph's: a Graph token
// of it in its home tenant rolls its key.
func TestConfigRegistersApplications(t *testing.T) {
	cert := appCert(t)
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	cfg, err := entraemu.ParseConfig([]byte(`
apps:
  - clientID: ` + clientID + `
    objectID: ` + objectID + `
    homeTenantID: ` + homeTenantID + `
    certificates:
      - |
` + indent(certPEM, "        ") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := &graphFixture{fixture: newFixture(t), cert: cert}
	f.emu.Load(cfg)
	f.graph = f.serve(t, f.emu.Graph(v1alpha1.CloudPublic))
	next := newCert(t, otherKey(), t0.Add(-time.Hour), t0.AddDate(0, 3, 0))
	if resp := f.call(t, "addKey", objectID, f.graphToken(t), addKeyBody(next, f.proof(t))); resp.status != http.StatusOK {
		t.Fatalf("addKey: status %d, body %s", resp.status, resp.body)
	}
	for _, bad := range []string{"objectID: " + objectID, "homeTenantID: " + homeTenantID, "objectID: x\n    homeTenantID: " + homeTenantID} {
		if _, err := entraemu.ParseConfig([]byte("apps:\n  - clientID: " + clientID + "\n    " + bad + "\n")); err == nil {
			t.Errorf("config with %q alone accepted", bad)
		}
	}
}
