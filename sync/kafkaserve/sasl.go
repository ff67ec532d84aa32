package kafkaserve

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SASL as Kafka frames it since KIP-152: SaslHandshake names the mechanism, then SaslAuthenticate
// requests carry the mechanism's messages. After a SaslHandshake v0 (KIP-43, what kafka-python
// 2.0 and sarama's SASLHandshakeV0 send) the messages come instead as bare packets, a 4-byte size
// and the token with no request header, answered the same way; a failure closes the connection,
// as v0 has no place for an error. PLAIN (RFC 4616) checks a password sent as is, so it belongs
// on TLS; SCRAM-SHA-256 (RFC 5802, RFC 7677) proves knowledge of it without sending it.

const (
	mechPlain  = "PLAIN"
	mechScram  = "SCRAM-SHA-256"
	scramIters = 4096
)

type saslState struct {
	mechanism string
	// unframed: the handshake was v0, so the next packets are bare SASL tokens.
	unframed bool
	scram    *scramExchange
}

type scramExchange struct {
	user, password  string
	gs2, clientBare string
	serverFirst     string
	nonce           string
	salt            []byte
}

func (cc *conn) saslHandshake(r *kmsg.SASLHandshakeRequest) *kmsg.SASLHandshakeResponse {
	resp := r.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if cc.s.cfg.Users == nil {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp
	}
	resp.SupportedMechanisms = []string{mechPlain, mechScram}
	if cc.authed {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		return resp
	}
	switch r.Mechanism {
	case mechPlain, mechScram:
		cc.sasl = saslState{mechanism: r.Mechanism, unframed: r.GetVersion() == 0}
	default:
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	}
	return resp
}

func (cc *conn) saslAuthenticate(r *kmsg.SASLAuthenticateRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if cc.sasl.mechanism == "" || cc.authed {
		return nil, errClose{"SaslAuthenticate without a SaslHandshake first"}
	}
	fail := func(user, why string) (kmsg.Response, error) {
		cc.s.logger.Warn("kafka SASL authentication failed", "client", cc.c.RemoteAddr().String(), "mechanism", cc.sasl.mechanism, "user", user, "reason", why)
		msg := "authentication failed: give a user name and central's API token as the password"
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = &msg
		cc.closeAfter = true // Kafka closes the connection after a failed authentication
		return resp, nil
	}
	switch cc.sasl.mechanism {
	case mechPlain:
		parts := bytes.Split(r.SASLAuthBytes, []byte{0})
		if len(parts) != 3 {
			return fail("", "PLAIN message is not authzid NUL user NUL password")
		}
		user, pass := string(parts[1]), parts[2]
		want, ok := cc.s.cfg.Users.Password(user)
		if !ok || subtle.ConstantTimeCompare(pass, []byte(want)) != 1 {
			return fail(user, "wrong user or password")
		}
		cc.authenticated(user)
		return resp, nil
	case mechScram:
		if cc.sasl.scram == nil {
			ex, serverFirst, err := scramStart(string(r.SASLAuthBytes), cc.s.cfg.Users)
			if err != nil {
				return fail("", err.Error())
			}
			cc.sasl.scram = ex
			resp.SASLAuthBytes = []byte(serverFirst)
			return resp, nil
		}
		ex := cc.sasl.scram
		serverFinal, err := ex.finish(string(r.SASLAuthBytes))
		if err != nil {
			return fail(ex.user, err.Error())
		}
		cc.authenticated(ex.user)
		resp.SASLAuthBytes = []byte(serverFinal)
		return resp, nil
	}
	return nil, errClose{"unknown SASL state"}
}

// saslToken answers a bare SASL token sent after a SaslHandshake v0 with the server's token as a
// bare packet (empty when the mechanism has nothing to say, as PLAIN on success); a failed login
// closes the connection.
func (cc *conn) saslToken(token []byte) (net.Buffers, error) {
	resp, err := cc.saslAuthenticate(&kmsg.SASLAuthenticateRequest{SASLAuthBytes: token})
	if err != nil {
		return nil, err
	}
	ar := resp.(*kmsg.SASLAuthenticateResponse)
	if ar.ErrorCode != 0 {
		return nil, errClose{"SASL authentication failed after a SaslHandshake v0"}
	}
	return net.Buffers{binary.BigEndian.AppendUint32(nil, uint32(len(ar.SASLAuthBytes))), ar.SASLAuthBytes}, nil
}

func (cc *conn) authenticated(user string) {
	cc.authed = true
	cc.sasl = saslState{}
	cc.s.logger.Info("kafka client authenticated", "client", cc.c.RemoteAddr().String(), "user", user)
}

// scramStart reads client-first-message "gs2-header n=user,r=nonce" and answers server-first.
// An unknown user gets the same kind of answer as a known one (with a throwaway password), so
// the exchange does not reveal which users exist; it fails at the proof.
func scramStart(msg string, users Users) (*scramExchange, string, error) {
	// gs2-header: "n," or "y," then optional "a=authzid", then ","
	gs2, bare, ok := cutN(msg, ',', 2)
	if !ok || (!strings.HasPrefix(gs2, "n,") && !strings.HasPrefix(gs2, "y,")) {
		return nil, "", fmt.Errorf("SCRAM client-first message has no gs2 header")
	}
	var user, cnonce string
	for _, attr := range strings.Split(bare, ",") {
		switch {
		case strings.HasPrefix(attr, "n="):
			user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(attr[2:])
		case strings.HasPrefix(attr, "r="):
			cnonce = attr[2:]
		case strings.HasPrefix(attr, "m="):
			return nil, "", fmt.Errorf("SCRAM mandatory extension not supported")
		}
	}
	if user == "" || cnonce == "" {
		return nil, "", fmt.Errorf("SCRAM client-first message lacks n= or r=")
	}
	password, known := users.Password(user)
	if !known {
		password = rand.Text()
	}
	ex := &scramExchange{user: user, password: password, gs2: gs2, clientBare: bare, salt: make([]byte, 16)}
	rand.Read(ex.salt)
	ex.nonce = cnonce + rand.Text()
	ex.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", ex.nonce, base64.StdEncoding.EncodeToString(ex.salt), scramIters)
	return ex, ex.serverFirst, nil
}

// cutN splits s after its n-th sep.
func cutN(s string, sep byte, n int) (head, tail string, ok bool) {
	seen := 0
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			seen++
			if seen == n {
				return s[:i+1], s[i+1:], true
			}
		}
	}
	return "", "", false
}

// finish checks client-final-message "c=...,r=...,p=proof" and returns server-final "v=...".
func (ex *scramExchange) finish(msg string) (string, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", fmt.Errorf("SCRAM client-final message lacks a proof")
	}
	withoutProof, proofB64 := msg[:i], msg[i+3:]
	var nonce, binding string
	for _, attr := range strings.Split(withoutProof, ",") {
		if v, ok := strings.CutPrefix(attr, "r="); ok {
			nonce = v
		} else if v, ok := strings.CutPrefix(attr, "c="); ok {
			binding = v
		}
	}
	// RFC 5802 wants the nonce repeated exactly; librdkafka sends its client nonce again in
	// front of it, and Kafka's broker accepts that by checking only the suffix. So do we: the
	// server's random part still has to come back, which is what defeats replay.
	if !strings.HasSuffix(nonce, ex.nonce) {
		return "", fmt.Errorf("SCRAM nonce mismatch")
	}
	if binding != base64.StdEncoding.EncodeToString([]byte(ex.gs2)) {
		return "", fmt.Errorf("SCRAM channel binding does not repeat the gs2 header")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if err != nil || len(proof) != sha256.Size {
		return "", fmt.Errorf("SCRAM proof is not a base64 SHA-256 value")
	}
	salted, err := pbkdf2.Key(sha256.New, ex.password, ex.salt, scramIters, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("derive SCRAM key: %w", err)
	}
	clientKey := hmacSum(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	authMessage := ex.clientBare + "," + ex.serverFirst + "," + withoutProof
	clientSig := hmacSum(storedKey[:], authMessage)
	recovered := make([]byte, len(proof))
	for i := range proof {
		recovered[i] = proof[i] ^ clientSig[i]
	}
	got := sha256.Sum256(recovered)
	if subtle.ConstantTimeCompare(got[:], storedKey[:]) != 1 {
		return "", fmt.Errorf("wrong user or password")
	}
	serverSig := hmacSum(hmacSum(salted, "Server Key"), authMessage)
	return "v=" + base64.StdEncoding.EncodeToString(serverSig), nil
}

func hmacSum(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}
