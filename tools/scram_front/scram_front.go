// scram_front: a minimal Kafka SASL/SCRAM front for the end-to-end tests
// (tests/e2e/test_sasl_scram_go.py). It authenticates each connection with the SCRAM server
// of github.com/xdg-go/scram, an implementation independent of the proxy's, and then pipes
// bytes both ways, unchanged, to a broker behind it. The proxy's SCRAM client is checked
// against it (kafka.security_protocol SASL_PLAINTEXT).
//
// Build (offline, Debian's packages golang-go and golang-github-xdg-go-scram-dev):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o scram-front tools/scram_front/scram_front.go
//
// Usage:
//
//	scram-front --listen HOST:PORT=BACKEND_HOST:BACKEND_PORT [--listen ...] --user NAME
//	            --password PW [--mechanisms SCRAM-SHA-256,SCRAM-SHA-512] [--iterations N]
//	            [--exit-on-eof] [--server-key-of-another-password]
//	  One listener per --listen, each piping to its backend after authentication. Prints
//	  "LISTENING HOST:PORT -> BACKEND" per listener and then "READY" on stdout; everything
//	  else (one line per connection, success or failure) goes to stderr. --exit-on-eof: exit
//	  when stdin closes (the test bed's launchers work that way).
//	  --server-key-of-another-password: the stored key is the password's, the server key
//	  another password's, so the front accepts the client's proof but then signs with a key
//	  the client does not expect (a front that does not know the password; a SCRAM client
//	  must refuse it).
//	scram-front credentials --mechanism SCRAM-SHA-256|SCRAM-SHA-512 --user NAME --password PW
//	            [--salt TEXT] [--iterations N]
//	  Prints the stored credential xdg-go/scram derives (JSON: salt, iterations, stored_key,
//	  server_key, base64), the shape of the proxy's listen.security.sasl.credentials keys.
//
// Per connection, before authentication (Kafka's SaslServerAuthenticator, simplified):
//   - ApiVersions v0-v3 is answered by the front itself with the three APIs it serves before
//     authentication (an unknown version: error 35 in v0's shape, as Kafka does).
//   - SaslHandshake v0/v1 names the mechanism; one not enabled gets error 33 with the
//     enabled list, and the connection closes.
//   - After handshake v1: SaslAuthenticate v0-v2 carry the SCRAM messages. After handshake
//     v0: the messages are raw size-prefixed tokens (no Kafka header), as in Kafka 0.10.
//   - A failed exchange answers error 58 (SASL_AUTHENTICATION_FAILED) and closes; any other
//     request before authentication closes the connection.
//
// After success the backend is dialled and whatever the client sends goes to it unchanged.
// Session lifetime 0 is returned (no KIP-368 re-authentication is asked for).
package main

import (
	"bufio"
	cryptoRand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/xdg-go/scram"
)

const (
	apiKeyApiVersions      = 18
	apiKeySaslHandshake    = 17
	apiKeySaslAuthenticate = 36

	errorUnsupportedSaslMechanism = 33
	errorUnsupportedVersion       = 35
	errorSaslAuthenticationFailed = 58

	// Requests before authentication are small; a bigger frame is not a SASL client.
	frameBytesMax = 1 << 20
	// SCRAM takes two rounds; a client asking for more is not following it.
	roundsMax = 4
	// A client that stops half-way is dropped after this.
	authenticationTimeout = 30 * time.Second
)

var hashes = map[string]scram.HashGeneratorFcn{
	"SCRAM-SHA-256": scram.SHA256,
	"SCRAM-SHA-512": scram.SHA512,
}

type listenFlags []string

func (l *listenFlags) String() string     { return strings.Join(*l, " ") }
func (l *listenFlags) Set(v string) error { *l = append(*l, v); return nil }

func usage(message string) {
	fmt.Fprintf(os.Stderr, "scram_front: %s\n", message)
	os.Exit(2)
}

// ---------------------------------------------------------------------------------------------
// Kafka encoding: the few fields these APIs have

type reader struct {
	data []byte
	err  error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.data) {
		r.err = errors.New("truncated request")
		return nil
	}
	out := r.data[:n]
	r.data = r.data[n:]
	return out
}

func (r *reader) int16() int16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int16(binary.BigEndian.Uint16(b))
}

func (r *reader) int32() int32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(b))
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	value, n := binary.Uvarint(r.data)
	if n <= 0 || n > 5 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.data = r.data[n:]
	return value
}

// A nullable string (int16 length, -1: null).
func (r *reader) nullableString() string {
	n := r.int16()
	if n < 0 {
		return ""
	}
	return string(r.take(int(n)))
}

func (r *reader) taggedFields() {
	count := r.uvarint()
	for i := uint64(0); i < count && r.err == nil; i++ {
		r.uvarint()
		r.take(int(r.uvarint()))
	}
}

type writer struct{ data []byte }

func (w *writer) int16(v int16) { w.data = binary.BigEndian.AppendUint16(w.data, uint16(v)) }
func (w *writer) int32(v int32) { w.data = binary.BigEndian.AppendUint32(w.data, uint32(v)) }
func (w *writer) int64(v int64) { w.data = binary.BigEndian.AppendUint64(w.data, uint64(v)) }
func (w *writer) uvarint(v uint64) {
	w.data = binary.AppendUvarint(w.data, v)
}
func (w *writer) string(s string) { w.int16(int16(len(s))); w.data = append(w.data, s...) }
func (w *writer) bytes(b []byte)  { w.int32(int32(len(b))); w.data = append(w.data, b...) }

type requestHeader struct {
	apiKey, apiVersion int16
	correlationID      int32
	clientID           string
}

// Flexible versions (header v2, compact fields) of the APIs served before authentication.
func flexible(apiKey, apiVersion int16) bool {
	switch apiKey {
	case apiKeyApiVersions:
		return apiVersion >= 3
	case apiKeySaslAuthenticate:
		return apiVersion >= 2
	}
	return false
}

func parseRequest(frame []byte) (requestHeader, *reader) {
	r := &reader{data: frame}
	header := requestHeader{apiKey: r.int16(), apiVersion: r.int16(), correlationID: r.int32()}
	header.clientID = r.nullableString()
	if flexible(header.apiKey, header.apiVersion) {
		r.taggedFields()
	}
	return header, r
}

// ---------------------------------------------------------------------------------------------
// One client connection

type front struct {
	backend    string
	server     map[string]*scram.Server // by mechanism
	mechanisms []string
	user       string
}

type session struct {
	front  *front
	conn   net.Conn
	in     *bufio.Reader
	logTag string
}

func (s *session) readFrame() ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(s.in, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > frameBytesMax {
		return nil, fmt.Errorf("frame of %d bytes before authentication", n)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(s.in, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func (s *session) writeFrame(payload []byte) error {
	framed := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	_, err := s.conn.Write(append(framed, payload...))
	return err
}

// A response: the correlation id (header v0, or v1 with empty tagged fields) and the body.
func (s *session) respond(header requestHeader, flexibleHeader bool, body []byte) error {
	w := &writer{}
	w.int32(header.correlationID)
	if flexibleHeader {
		w.uvarint(0)
	}
	return s.writeFrame(append(w.data, body...))
}

func (s *session) answerApiVersions(header requestHeader) error {
	served := [][3]int16{{apiKeyApiVersions, 0, 3}, {apiKeySaslHandshake, 0, 1}, {apiKeySaslAuthenticate, 0, 2}}
	version, errorCode := header.apiVersion, int16(0)
	if version < 0 || version > 3 {
		version, errorCode = 0, errorUnsupportedVersion
	}
	w := &writer{}
	w.int16(errorCode)
	if version >= 3 {
		w.uvarint(uint64(len(served)) + 1)
	} else {
		w.int32(int32(len(served)))
	}
	for _, api := range served {
		w.int16(api[0])
		w.int16(api[1])
		w.int16(api[2])
		if version >= 3 {
			w.uvarint(0)
		}
	}
	if version >= 1 {
		w.int32(0) // throttle_time_ms
	}
	if version >= 3 {
		w.uvarint(0)
	}
	// ApiVersions responses always have header v0 (KIP-511).
	return s.respond(header, false, w.data)
}

// Returns the mechanism, or "" when the handshake was refused (and answered).
func (s *session) answerHandshake(header requestHeader, body *reader) (string, error) {
	mechanism := body.nullableString()
	if body.err != nil {
		return "", body.err
	}
	w := &writer{}
	_, enabled := s.front.server[mechanism]
	if enabled {
		w.int16(0)
	} else {
		w.int16(errorUnsupportedSaslMechanism)
	}
	w.int32(int32(len(s.front.mechanisms)))
	for _, name := range s.front.mechanisms {
		w.string(name)
	}
	if err := s.respond(header, false, w.data); err != nil {
		return "", err
	}
	if !enabled {
		return "", fmt.Errorf("SaslHandshake v%d asked for %q, not enabled (error 33)", header.apiVersion, mechanism)
	}
	return mechanism, nil
}

func (s *session) answerAuthenticate(header requestHeader, errorCode int16, message string, token []byte) error {
	w := &writer{}
	w.int16(errorCode)
	flexibleBody := header.apiVersion >= 2
	if flexibleBody {
		if errorCode == 0 {
			w.uvarint(0) // null error message
		} else {
			w.uvarint(uint64(len(message)) + 1)
			w.data = append(w.data, message...)
		}
		w.uvarint(uint64(len(token)) + 1)
		w.data = append(w.data, token...)
	} else {
		if errorCode == 0 {
			w.int16(-1)
		} else {
			w.string(message)
		}
		w.bytes(token)
	}
	if header.apiVersion >= 1 {
		w.int64(0) // session_lifetime_ms: no re-authentication asked for
	}
	if flexibleBody {
		w.uvarint(0)
	}
	return s.respond(header, flexibleBody, w.data)
}

func readAuthBytes(header requestHeader, body *reader) ([]byte, error) {
	var token []byte
	if header.apiVersion >= 2 {
		n := body.uvarint()
		if n == 0 {
			return nil, errors.New("null auth_bytes")
		}
		token = body.take(int(n - 1))
		body.taggedFields()
	} else {
		token = body.take(int(body.int32()))
	}
	return token, body.err
}

// The SCRAM exchange; true when the client proved its password.
func (s *session) authenticate(mechanism string, framed bool) (bool, string, error) {
	conversation := s.front.server[mechanism].NewConversation()
	how := "raw tokens after SaslHandshake v0"
	for round := 0; round < roundsMax; round++ {
		frame, err := s.readFrame()
		if err != nil {
			return false, how, err
		}
		if !framed {
			reply, stepErr := conversation.Step(string(frame))
			if stepErr != nil {
				return false, how, fmt.Errorf("SCRAM: %v", stepErr) // Kafka closes without an answer
			}
			if err := s.writeFrame([]byte(reply)); err != nil {
				return false, how, err
			}
		} else {
			header, body := parseRequest(frame)
			if body.err != nil {
				return false, how, body.err
			}
			if header.apiKey != apiKeySaslAuthenticate || header.apiVersion < 0 || header.apiVersion > 2 {
				return false, how, fmt.Errorf("API key %d v%d during the SCRAM exchange", header.apiKey, header.apiVersion)
			}
			how = fmt.Sprintf("SaslAuthenticate v%d", header.apiVersion)
			token, err := readAuthBytes(header, body)
			if err != nil {
				return false, how, err
			}
			reply, stepErr := conversation.Step(string(token))
			if stepErr != nil {
				message := fmt.Sprintf("Authentication failed during authentication due to invalid credentials with SASL mechanism %s", mechanism)
				if err := s.answerAuthenticate(header, errorSaslAuthenticationFailed, message, nil); err != nil {
					return false, how, err
				}
				return false, how, fmt.Errorf("SCRAM: %v (answered error 58)", stepErr)
			}
			if err := s.answerAuthenticate(header, 0, "", []byte(reply)); err != nil {
				return false, how, err
			}
		}
		if conversation.Done() {
			if !conversation.Valid() {
				return false, how, errors.New("SCRAM: conversation ended without a valid proof")
			}
			return true, how, nil
		}
	}
	return false, how, errors.New("SCRAM: too many rounds")
}

// Requests until a handshake names an enabled mechanism; then the exchange.
func (s *session) run() {
	defer s.conn.Close()
	s.conn.SetDeadline(time.Now().Add(authenticationTimeout))
	for {
		frame, err := s.readFrame()
		if err != nil {
			log.Printf("%s: closed before authenticating: %v", s.logTag, err)
			return
		}
		header, body := parseRequest(frame)
		if body.err != nil {
			log.Printf("%s: malformed request header: %v", s.logTag, body.err)
			return
		}
		switch {
		case header.apiKey == apiKeyApiVersions:
			if err := s.answerApiVersions(header); err != nil {
				log.Printf("%s: %v", s.logTag, err)
				return
			}
		case header.apiKey == apiKeySaslHandshake && (header.apiVersion == 0 || header.apiVersion == 1):
			mechanism, err := s.answerHandshake(header, body)
			if err != nil {
				log.Printf("%s: %v", s.logTag, err)
				return
			}
			ok, how, err := s.authenticate(mechanism, header.apiVersion == 1)
			if !ok {
				log.Printf("%s: %s authentication failed (%s): %v", s.logTag, mechanism, how, err)
				return
			}
			log.Printf("%s: authenticated user '%s' with %s (SaslHandshake v%d, %s); piping to %s",
				s.logTag, s.front.user, mechanism, header.apiVersion, how, s.front.backend)
			s.conn.SetDeadline(time.Time{})
			s.pipe()
			return
		default:
			log.Printf("%s: API key %d v%d before authentication: closing", s.logTag, header.apiKey, header.apiVersion)
			return
		}
	}
}

// Both directions, unchanged, until either side closes.
func (s *session) pipe() {
	backend, err := net.DialTimeout("tcp", s.front.backend, 5*time.Second)
	if err != nil {
		log.Printf("%s: backend %s: %v", s.logTag, s.front.backend, err)
		return
	}
	defer backend.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(s.conn, backend)
		s.conn.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(backend, s.in) // s.in first: bytes read past the last SASL frame
	backend.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

// ---------------------------------------------------------------------------------------------
// Start-up

func storedCredentials(mechanism, user, password, salt string, iterations int) scram.StoredCredentials {
	client, err := hashes[mechanism].NewClient(user, password, "")
	if err != nil {
		usage(err.Error())
	}
	return client.GetStoredCredentials(scram.KeyFactors{Salt: salt, Iters: iterations})
}

func randomSalt() string {
	salt := make([]byte, 16)
	if _, err := io.ReadFull(cryptoRand.Reader, salt); err != nil {
		panic(err)
	}
	return string(salt)
}

func printCredentials(argv []string) {
	flags := flag.NewFlagSet("scram-front credentials", flag.ContinueOnError)
	mechanism := flags.String("mechanism", "SCRAM-SHA-256", "SCRAM-SHA-256 | SCRAM-SHA-512")
	user := flags.String("user", "", "user name")
	password := flags.String("password", "", "password")
	salt := flags.String("salt", "", "salt (default: 16 random bytes)")
	iterations := flags.Int("iterations", 4096, "PBKDF2 iterations")
	if err := flags.Parse(argv); err != nil {
		usage(err.Error())
	}
	if _, known := hashes[*mechanism]; !known || *user == "" {
		usage("credentials needs --mechanism SCRAM-SHA-256|SCRAM-SHA-512 and --user")
	}
	if *salt == "" {
		*salt = randomSalt()
	}
	stored := storedCredentials(*mechanism, *user, *password, *salt, *iterations)
	text, _ := json.Marshal(map[string]interface{}{
		"salt":       base64.StdEncoding.EncodeToString([]byte(stored.Salt)),
		"iterations": stored.Iters,
		"stored_key": base64.StdEncoding.EncodeToString(stored.StoredKey),
		"server_key": base64.StdEncoding.EncodeToString(stored.ServerKey),
	})
	fmt.Println(string(text))
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("scram_front: ")
	if len(os.Args) > 1 && os.Args[1] == "credentials" {
		printCredentials(os.Args[2:])
		return
	}
	var listens listenFlags
	flags := flag.NewFlagSet("scram-front", flag.ContinueOnError)
	flags.Var(&listens, "listen", "HOST:PORT=BACKEND_HOST:BACKEND_PORT (repeatable)")
	user := flags.String("user", "", "the one user")
	password := flags.String("password", "", "its password")
	mechanisms := flags.String("mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512", "enabled mechanisms")
	iterations := flags.Int("iterations", 4096, "PBKDF2 iterations of the stored credentials")
	exitOnEOF := flags.Bool("exit-on-eof", false, "exit when stdin closes")
	badServerKey := flags.Bool("server-key-of-another-password", false, "sign with a wrong server key")
	if err := flags.Parse(os.Args[1:]); err != nil {
		usage(err.Error())
	}
	if len(listens) == 0 || *user == "" || *password == "" {
		usage("--listen, --user and --password are required")
	}
	servers := map[string]*scram.Server{}
	var enabled []string
	for _, mechanism := range strings.Split(*mechanisms, ",") {
		hash, known := hashes[mechanism]
		if !known {
			usage("unknown mechanism " + mechanism)
		}
		// Keys derived by xdg-go/scram's own client code from the password (KeyFactors ->
		// StoredCredentials); the server never sees the password.
		salt := randomSalt()
		stored := storedCredentials(mechanism, *user, *password, salt, *iterations)
		if *badServerKey {
			stored.ServerKey = storedCredentials(mechanism, *user, "not-"+*password, salt, *iterations).ServerKey
		}
		knownUser := *user
		server, err := hash.NewServer(func(name string) (scram.StoredCredentials, error) {
			if name != knownUser {
				return scram.StoredCredentials{}, fmt.Errorf("unknown user '%s'", name)
			}
			return stored, nil
		})
		if err != nil {
			usage(err.Error())
		}
		servers[mechanism] = server
		enabled = append(enabled, mechanism)
	}
	var listeners []net.Listener
	var fronts []*front
	for _, mapping := range listens {
		address, backend, found := strings.Cut(mapping, "=")
		if !found {
			usage("--listen wants HOST:PORT=BACKEND_HOST:BACKEND_PORT, got " + mapping)
		}
		listener, err := net.Listen("tcp", address)
		if err != nil {
			usage(err.Error())
		}
		listeners = append(listeners, listener)
		fronts = append(fronts, &front{backend: backend, server: servers, mechanisms: enabled, user: *user})
		fmt.Printf("LISTENING %s -> %s\n", listener.Addr(), backend)
	}
	fmt.Println("READY")
	for i, listener := range listeners {
		go serve(listener, fronts[i])
	}
	if *exitOnEOF {
		io.Copy(io.Discard, os.Stdin)
		log.Printf("stdin closed: exiting")
		return
	}
	select {}
}

func serve(listener net.Listener, f *front) {
	for {
		conn, err := listener.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", listener.Addr(), err)
			return
		}
		tag := fmt.Sprintf("%s <- %s", listener.Addr(), conn.RemoteAddr())
		s := &session{front: f, conn: conn, in: bufio.NewReader(conn), logTag: tag}
		go s.run()
	}
}
