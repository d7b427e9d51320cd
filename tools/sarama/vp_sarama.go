// vp_sarama: a sarama 1.22 (Go) client for the producer end-to-end tests
// (tests/e2e/test_producers.py): a client implementation independent of librdkafka, kafkajs
// and kafka-python (DESIGN.md section 5). Every output line is one JSON object; the last one
// has "type": "done" (exit 0, or 1 with "error" set).
//
// Build (offline, Debian's packages golang-go and golang-github-shopify-sarama-dev):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o vp-sarama tools/sarama/vp_sarama.go
//
// Usage: vp-sarama OP --bootstrap HOST:PORT[,...] --topic T --partitions LIST [options]
//
//	produce --count K [--prefix P] [--order partition|round] [--idempotent 0|1]
//	        [--emit-deliveries 0|1]
//	  value "<P>-<partition>-<i>", key "k-<i>", i in 0..K-1, to each partition of LIST, with
//	  the manual partitioner (each record goes to the partition it names), acks=all, one
//	  AsyncProducer whose successes and errors are all collected.
//	  --idempotent 1: Producer.Idempotent with what sarama requires for it: Net.MaxOpenRequests
//	  1, RequiredAcks WaitForAll, Retry.Max >= 1, and a protocol version >= 0.11 (--version).
//	  -> {"type":"delivery","partition","offset","value"} per acknowledged record;
//	     done has "delivered", "error_count", "errors" (first 20) and "by_partition".
//	consume --expect K [--isolation read_uncommitted|read_committed] [--drain-ms MS]
//	  each partition of LIST in turn, from the oldest offset, until K records came and then
//	  --drain-ms more (to catch extras), or until --partition-timeout-ms passed.
//	  -> {"type":"record","partition","offset","key","value"} per record,
//	     {"type":"partition_done","partition","received","timed_out","ms"} per partition.
//	group --group G --stop-after N [--retention-ms MS]
//	  a member of consumer group G (sarama's ConsumerGroup, every partition of the topic,
//	  from the oldest offset when G has no commit), marking each record it emits; after N
//	  records it leaves, committing what it marked (sarama's offset manager commits on
//	  close). sarama 1.22 commits with OffsetCommit v1 unless --retention-ms is set (v2).
//	  -> {"type":"record","partition","offset","value"} per marked record; done has
//	     "received" and "committed_errors" (commit errors the group reported).
//	--version V         Kafka protocol version sarama assumes (default 0.11.0.2). sarama 1.22
//	                    picks request versions from this alone (no ApiVersions) and defaults
//	                    to 0.8.2, too old for idempotence (record batches v2 and
//	                    InitProducerId need >= 0.11). Measured against the librdkafka 2.0.2
//	                    mock: 0.11.0.2 works (Metadata v1, Produce v3, Fetch v4,
//	                    InitProducerId v0); 1.0.0 and later do not, because sarama then sends
//	                    Metadata v5 and that mock, which knows Metadata up to v2 only, closes
//	                    the connection ("client has run out of available brokers").
//	--timeout-ms MS     overall deadline (default 60000); on expiry: done with "timed_out".
//	--partition-timeout-ms MS  per partition of consume (default 20000).
//	--verbose 1         sarama's own log on stderr.
//	--sasl-mechanism M  SASL toward the bootstrap servers (default: none): PLAIN,
//	                    SCRAM-SHA-256 or SCRAM-SHA-512, as --sasl-user with --sasl-password.
//	                    SCRAM runs the client of github.com/xdg-go/scram (Debian's
//	                    golang-github-xdg-go-scram-dev) through sarama's
//	                    SCRAMClientGeneratorFunc; sarama 1.22 then sends SaslHandshake v1 and
//	                    SaslAuthenticate v0, whatever --version says (tests/e2e/
//	                    test_sasl_scram_go.py). PLAIN: SaslHandshake v0 and a raw token below
//	                    --version 1.0.0, v1 and SaslAuthenticate v0 from it. A refused login
//	                    ends as the error of the op.
//
// LIST: comma-separated partitions and ranges, e.g. "0,4,8" or "0-99".
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Shopify/sarama"
	"github.com/xdg-go/scram"
)

type options struct {
	op                 string
	bootstrap          string
	topic              string
	partitions         []int32
	count              int
	prefix             string
	order              string
	idempotent         bool
	emitDeliveries     bool
	expect             int
	isolation          string
	drainMs            int
	partitionTimeoutMs int
	timeoutMs          int
	version            sarama.KafkaVersion
	group              string
	stopAfter          int
	retentionMs        int
	saslMechanism      string
	saslUser           string
	saslPassword       string
}

func emit(line map[string]interface{}) {
	text, err := json.Marshal(line)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(text, '\n'))
}

func finish(extra map[string]interface{}) {
	line := map[string]interface{}{"type": "done"}
	for key, value := range extra {
		line[key] = value
	}
	emit(line)
	if _, failed := extra["error"]; failed {
		os.Exit(1)
	}
	os.Exit(0)
}

func usage(message string) {
	fmt.Fprintf(os.Stderr, "vp_sarama: %s\n", message)
	os.Exit(2)
}

// "0,2,5-7" -> [0 2 5 6 7]
func parseList(text string) ([]int32, error) {
	var values []int32
	for _, part := range strings.Split(text, ",") {
		if part == "" {
			continue
		}
		if bounds := strings.SplitN(part, "-", 2); len(bounds) == 2 {
			low, err1 := strconv.Atoi(bounds[0])
			high, err2 := strconv.Atoi(bounds[1])
			if err1 != nil || err2 != nil || low > high {
				return nil, fmt.Errorf("bad range %q", part)
			}
			for v := low; v <= high; v++ {
				values = append(values, int32(v))
			}
			continue
		}
		v, err := strconv.Atoi(part)
		if err != nil {
			return nil, fmt.Errorf("bad list entry %q", part)
		}
		values = append(values, int32(v))
	}
	return values, nil
}

func parseOptions(argv []string) options {
	if len(argv) < 1 {
		usage("usage: vp-sarama OP --bootstrap B --topic T --partitions LIST [options]")
	}
	opts := options{op: argv[0]}
	flags := flag.NewFlagSet("vp-sarama", flag.ContinueOnError)
	partitions := flags.String("partitions", "0", "partition list")
	idempotent := flags.Int("idempotent", 0, "1: idempotent producer")
	emitDeliveries := flags.Int("emit-deliveries", 1, "0: no delivery lines")
	version := flags.String("version", "0.11.0.2", "Kafka protocol version")
	verbose := flags.Int("verbose", 0, "1: sarama's log on stderr")
	flags.StringVar(&opts.bootstrap, "bootstrap", "", "bootstrap servers")
	flags.StringVar(&opts.topic, "topic", "", "topic")
	flags.IntVar(&opts.count, "count", 1, "records per partition")
	flags.StringVar(&opts.prefix, "prefix", "v", "value prefix")
	flags.StringVar(&opts.order, "order", "partition", "partition | round")
	flags.IntVar(&opts.expect, "expect", 0, "records wanted per partition")
	flags.StringVar(&opts.isolation, "isolation", "read_uncommitted", "isolation level")
	flags.IntVar(&opts.drainMs, "drain-ms", 500, "extra wait after the expected records")
	flags.IntVar(&opts.partitionTimeoutMs, "partition-timeout-ms", 20000, "per partition")
	flags.IntVar(&opts.timeoutMs, "timeout-ms", 60000, "overall deadline")
	flags.StringVar(&opts.group, "group", "", "consumer group (group)")
	flags.IntVar(&opts.stopAfter, "stop-after", 0, "records before leaving (group)")
	flags.IntVar(&opts.retentionMs, "retention-ms", 0, "offset retention: > 0 commits with v2 (group)")
	flags.StringVar(&opts.saslMechanism, "sasl-mechanism", "", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512")
	flags.StringVar(&opts.saslUser, "sasl-user", "", "SASL user name")
	flags.StringVar(&opts.saslPassword, "sasl-password", "", "SASL password")
	if err := flags.Parse(argv[1:]); err != nil {
		usage(err.Error())
	}
	if opts.bootstrap == "" || opts.topic == "" {
		usage("--bootstrap and --topic are required")
	}
	var err error
	if opts.partitions, err = parseList(*partitions); err != nil {
		usage(err.Error())
	}
	if opts.version, err = sarama.ParseKafkaVersion(*version); err != nil {
		usage(err.Error())
	}
	opts.idempotent = *idempotent != 0
	opts.emitDeliveries = *emitDeliveries != 0
	if *verbose != 0 {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}
	return opts
}

func baseConfig(opts options) *sarama.Config {
	config := sarama.NewConfig()
	config.ClientID = "kpp-e2e-sarama"
	config.Version = opts.version
	config.Net.DialTimeout = 5 * time.Second
	config.Net.ReadTimeout = 15 * time.Second
	config.Net.WriteTimeout = 15 * time.Second
	config.Metadata.Retry.Max = 10
	config.Metadata.Retry.Backoff = 200 * time.Millisecond
	if opts.saslMechanism != "" {
		config.Net.SASL.Enable = true
		config.Net.SASL.Handshake = true
		config.Net.SASL.Mechanism = sarama.SASLMechanism(opts.saslMechanism)
		config.Net.SASL.User = opts.saslUser
		config.Net.SASL.Password = opts.saslPassword
		switch opts.saslMechanism {
		case sarama.SASLTypeSCRAMSHA256:
			config.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &xdgSCRAMClient{hash: scram.SHA256} }
		case sarama.SASLTypeSCRAMSHA512:
			config.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &xdgSCRAMClient{hash: scram.SHA512} }
		case sarama.SASLTypePlaintext:
		default:
			usage("unknown --sasl-mechanism " + opts.saslMechanism)
		}
	}
	return config
}

// xdgSCRAMClient is sarama's SCRAMClient on xdg-go/scram: it checks the server's
// signature in the last step, so a server that does not know the password fails here too.
type xdgSCRAMClient struct {
	hash         scram.HashGeneratorFcn
	conversation *scram.ClientConversation
}

func (c *xdgSCRAMClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	c.conversation = client.NewConversation()
	return nil
}

func (c *xdgSCRAMClient) Step(challenge string) (string, error) {
	return c.conversation.Step(challenge)
}

func (c *xdgSCRAMClient) Done() bool { return c.conversation.Done() }

type planned struct {
	partition int32
	key       string
	value     string
}

// The records to produce, in the order they are handed to the producer.
func plannedRecords(opts options) []planned {
	var records []planned
	push := func(partition int32, i int) {
		records = append(records, planned{partition, fmt.Sprintf("k-%d", i),
			fmt.Sprintf("%s-%d-%d", opts.prefix, partition, i)})
	}
	switch opts.order {
	case "partition":
		for _, p := range opts.partitions {
			for i := 0; i < opts.count; i++ {
				push(p, i)
			}
		}
	case "round":
		for i := 0; i < opts.count; i++ {
			for _, p := range opts.partitions {
				push(p, i)
			}
		}
	default:
		usage("unknown --order " + opts.order)
	}
	return records
}

type partitionSummary struct {
	Count int   `json:"count"`
	First int64 `json:"first"`
	Last  int64 `json:"last"`
}

func produce(opts options) {
	config := baseConfig(opts)
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Partitioner = sarama.NewManualPartitioner
	config.Producer.Return.Successes = true
	config.Producer.Return.Errors = true
	config.Producer.Retry.Max = 10
	config.Producer.Retry.Backoff = 200 * time.Millisecond
	config.Producer.Flush.Frequency = 5 * time.Millisecond
	config.Producer.Timeout = 15 * time.Second
	if opts.idempotent {
		config.Producer.Idempotent = true
		config.Net.MaxOpenRequests = 1
	}
	producer, err := sarama.NewAsyncProducer(strings.Split(opts.bootstrap, ","), config)
	if err != nil {
		finish(map[string]interface{}{"error": "NewAsyncProducer: " + err.Error()})
	}
	records := plannedRecords(opts)
	byPartition := map[string]*partitionSummary{}
	errors := []map[string]interface{}{}
	delivered, errorCount := 0, 0
	// Input and results at the same time: the input channel blocks while results wait.
	go func() {
		for _, record := range records {
			producer.Input() <- &sarama.ProducerMessage{
				Topic: opts.topic, Partition: record.partition,
				Key: sarama.StringEncoder(record.key), Value: sarama.StringEncoder(record.value)}
		}
	}()
	deadline := time.After(time.Duration(opts.timeoutMs) * time.Millisecond)
	for reported := 0; reported < len(records); reported++ {
		select {
		case message := <-producer.Successes():
			value, _ := message.Value.Encode()
			delivered++
			if opts.emitDeliveries {
				emit(map[string]interface{}{"type": "delivery", "partition": message.Partition,
					"offset": message.Offset, "value": string(value)})
			}
			key := strconv.Itoa(int(message.Partition))
			entry := byPartition[key]
			if entry == nil {
				entry = &partitionSummary{0, message.Offset, message.Offset}
				byPartition[key] = entry
			}
			entry.Count++
			if message.Offset < entry.First {
				entry.First = message.Offset
			}
			if message.Offset > entry.Last {
				entry.Last = message.Offset
			}
		case failure := <-producer.Errors():
			value, _ := failure.Msg.Value.Encode()
			errorCount++
			if len(errors) < 20 {
				errors = append(errors, map[string]interface{}{"partition": failure.Msg.Partition,
					"value": string(value), "error": failure.Err.Error()})
			}
		case <-deadline:
			finish(map[string]interface{}{"timed_out": true, "delivered": delivered,
				"error_count": errorCount, "errors": errors})
		}
	}
	if err := producer.Close(); err != nil {
		errorCount++
		errors = append(errors, map[string]interface{}{"error": "Close: " + err.Error()})
	}
	finish(map[string]interface{}{"delivered": delivered, "error_count": errorCount,
		"errors": errors, "by_partition": byPartition})
}

func consume(opts options) {
	config := baseConfig(opts)
	config.Consumer.Return.Errors = true
	config.Consumer.MaxWaitTime = 100 * time.Millisecond
	switch opts.isolation {
	case "read_uncommitted":
		config.Consumer.IsolationLevel = sarama.ReadUncommitted
	case "read_committed":
		config.Consumer.IsolationLevel = sarama.ReadCommitted
	default:
		usage("unknown --isolation " + opts.isolation)
	}
	consumer, err := sarama.NewConsumer(strings.Split(opts.bootstrap, ","), config)
	if err != nil {
		finish(map[string]interface{}{"error": "NewConsumer: " + err.Error()})
	}
	deadline := time.Now().Add(time.Duration(opts.timeoutMs) * time.Millisecond)
	received, anyTimedOut := 0, false
	for _, partition := range opts.partitions {
		started := time.Now()
		child, err := consumer.ConsumePartition(opts.topic, partition, sarama.OffsetOldest)
		if err != nil {
			finish(map[string]interface{}{"error": fmt.Sprintf("ConsumePartition %d: %v",
				partition, err)})
		}
		count, timedOut := 0, false
		limit := started.Add(time.Duration(opts.partitionTimeoutMs) * time.Millisecond)
		if limit.After(deadline) {
			limit = deadline
		}
		var drainUntil time.Time
		for {
			now := time.Now()
			if !drainUntil.IsZero() && now.After(drainUntil) {
				break
			}
			if drainUntil.IsZero() && now.After(limit) {
				timedOut = true
				break
			}
			select {
			case message := <-child.Messages():
				count++
				emit(map[string]interface{}{"type": "record", "partition": message.Partition,
					"offset": message.Offset, "key": string(message.Key),
					"value": string(message.Value)})
			case failure := <-child.Errors():
				emit(map[string]interface{}{"type": "log", "error": failure.Error()})
			case <-time.After(50 * time.Millisecond):
			}
			if count >= opts.expect && drainUntil.IsZero() {
				drainUntil = time.Now().Add(time.Duration(opts.drainMs) * time.Millisecond)
			}
		}
		child.Close()
		received += count
		anyTimedOut = anyTimedOut || timedOut
		emit(map[string]interface{}{"type": "partition_done", "partition": partition,
			"received": count, "timed_out": timedOut,
			"ms": time.Since(started).Milliseconds()})
	}
	consumer.Close()
	finish(map[string]interface{}{"received": received, "partition_timed_out": anyTimedOut})
}

// groupHandler marks and emits records until the run's quota is reached, then cancels.
type groupHandler struct {
	remaining int
	received  int
	done      chan struct{}
	closed    bool
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for message := range claim.Messages() {
		// Claims are consumed concurrently: one lock keeps the quota exact.
		groupLock <- struct{}{}
		if h.remaining <= 0 {
			<-groupLock
			return nil
		}
		h.remaining--
		h.received++
		session.MarkMessage(message, "")
		emit(map[string]interface{}{"type": "record", "partition": message.Partition,
			"offset": message.Offset, "value": string(message.Value)})
		if h.remaining == 0 && !h.closed {
			h.closed = true
			close(h.done)
		}
		<-groupLock
	}
	return nil
}

var groupLock = make(chan struct{}, 1)

func consumeGroup(opts options) {
	if opts.group == "" || opts.stopAfter <= 0 {
		usage("group needs --group and --stop-after")
	}
	config := baseConfig(opts)
	config.Consumer.Return.Errors = true
	config.Consumer.MaxWaitTime = 100 * time.Millisecond
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	if opts.retentionMs > 0 {
		config.Consumer.Offsets.Retention = time.Duration(opts.retentionMs) * time.Millisecond
	}
	group, err := sarama.NewConsumerGroup(strings.Split(opts.bootstrap, ","), opts.group, config)
	if err != nil {
		finish(map[string]interface{}{"error": "NewConsumerGroup: " + err.Error()})
	}
	handler := &groupHandler{remaining: opts.stopAfter, done: make(chan struct{})}
	var commitErrors []string
	go func() {
		for failure := range group.Errors() {
			commitErrors = append(commitErrors, failure.Error())
			emit(map[string]interface{}{"type": "log", "error": failure.Error()})
		}
	}()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := group.Consume(context.Background(), []string{opts.topic}, handler); err != nil {
				emit(map[string]interface{}{"type": "log", "error": "Consume: " + err.Error()})
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	timedOut := false
	select {
	case <-handler.done:
	case <-time.After(time.Duration(opts.timeoutMs) * time.Millisecond):
		timedOut = true
	}
	close(stop)
	// Leaving commits the marked offsets (sarama's offset manager flushes on close).
	closeErr := group.Close()
	extra := map[string]interface{}{"received": handler.received, "timed_out": timedOut,
		"committed_errors": commitErrors}
	if closeErr != nil {
		extra["error"] = "Close: " + closeErr.Error()
	} else if timedOut {
		extra["error"] = fmt.Sprintf("timed out after %d of %d records", handler.received, opts.stopAfter)
	}
	finish(extra)
}

func main() {
	opts := parseOptions(os.Args[1:])
	switch opts.op {
	case "produce":
		produce(opts)
	case "consume":
		consume(opts)
	case "group":
		consumeGroup(opts)
	default:
		usage("unknown OP " + opts.op)
	}
}
