package agent

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/intransit/intransit/pkg/audit"
	"github.com/intransit/intransit/pkg/auth"
	"github.com/intransit/intransit/pkg/config"
	"github.com/intransit/intransit/pkg/httpstream"
	"github.com/intransit/intransit/pkg/metrics"
	"github.com/intransit/intransit/pkg/recorder"
	"github.com/intransit/intransit/pkg/recording"
	"github.com/intransit/intransit/pkg/relay"
)

// EventRecordingError is the audit event of a recording that could not be
// written (recordings.onError decides what the session does).
const EventRecordingError = "recording_error"

// openStore opens recordings.dir when some rule records.
func (a *Agent) openStore(cfg *config.Config) error {
	if a.store != nil || !cfg.Records() {
		return nil
	}
	var key []byte
	if cfg.Recordings.KeyFile != "" {
		k, err := os.ReadFile(cfg.Recordings.KeyFile)
		if err != nil {
			return fmt.Errorf("recordings.keyFile: %w", err)
		}
		key = k
	}
	s, err := recording.OpenStore(cfg.Recordings.Dir, recording.StoreOptions{
		MaxSessionBytes: int64(cfg.Recordings.MaxSessionSize),
		MaxTotalBytes:   int64(cfg.Recordings.MaxTotalSize),
		Key:             key,
	})
	if err != nil {
		return fmt.Errorf("recordings.dir: %w", err)
	}
	a.store = s
	a.storeShape = recordingsShape(cfg)
	a.metrics.SetRecordingsSource(metrics.RecordingsSource{Usage: s.Usage, Evicted: s.Evicted})
	return nil
}

// recordingsShape is the part of recordings that needs a restart to change
// once the store is open.
func recordingsShape(cfg *config.Config) string {
	r := cfg.Recordings
	return fmt.Sprint(r.Dir, "|", r.MaxSessionSize, "|", r.MaxTotalSize, "|", r.KeyFile)
}

// injectSource reads a rule's held credential, re-reading it on change.
func newInjectSource(in *config.Inject) (*auth.FileSource, error) {
	if in == nil {
		return nil, nil
	}
	src, err := auth.NewFileSource(in.ValueFile)
	if err != nil {
		return nil, fmt.Errorf("inject.valueFile: %w", err)
	}
	return src, nil
}

// sessionHooks sets up recording and credential injection for a session.
// A nil Hooks means neither applies. The recorder is nil when the rule does
// not record or the recording could not start under onError: continue.
func (a *Agent) sessionHooks(st *state, rs *ruleState, ev audit.Event, start time.Time, peerCert []byte) (*relay.Hooks, *recorder.Recorder, error) {
	var h relay.Hooks
	var rec *recorder.Recorder
	var mask []string
	if in := rs.cfg.Inject; in != nil && rs.inject != nil {
		src := rs.inject
		inj := httpstream.NewInjector(in.Header, func() (string, error) { return src.Token(context.Background()) })
		h.ClientTransform, h.ClientEOF = inj.Transform, inj.Close
		mask = append(mask, in.Header)
	}
	if level := rs.cfg.Record; level != config.RecordOff && a.store != nil {
		meta := recording.Meta{
			ID: ev.Session, Start: start, Rule: rs.cfg.Name, Level: level, Node: a.node,
			Source: ev.Source, Destination: ev.Destination, Upstream: ev.Upstream,
			Process: ev.Process, TLS: ev.TLS, Identity: ev.Identity, Verdict: ev.Verdict,
			Redaction: &recording.RedactionInfo{
				Headers: st.cfg.Redaction.Headers, JSONFields: st.cfg.Redaction.JSONFields, Patterns: st.cfg.Redaction.Patterns,
			},
		}
		if len(peerCert) > 0 {
			meta.PeerCertificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peerCert}))
		}
		closeOnError := st.cfg.Recordings.OnError == config.OnErrorClose
		r, err := recorder.Start(a.store, meta, recorder.Options{
			Full:         level == config.RecordFull,
			Redactor:     st.redactor,
			MaskHeaders:  mask,
			CloseOnError: closeOnError,
			Failed:       a.recordingFailedFunc(ev, st.cfg.Recordings.OnError),
		})
		switch {
		case err == nil:
			rec = r
			a.metrics.Recordings.WithLabelValues(rs.cfg.Name, level).Inc()
			if level == config.RecordFull {
				h.Tap = r.Tap
			}
		case closeOnError:
			a.recordingFailed(ev, config.OnErrorClose, err)
			return nil, nil, fmt.Errorf("recording could not start (recordings.onError: close): %w", err)
		default:
			a.recordingFailed(ev, config.OnErrorContinue, err)
		}
	}
	if h.ClientTransform == nil && h.Tap == nil {
		return nil, rec, nil
	}
	hooks := h // only sessions with hooks pay for a heap copy
	return &hooks, rec, nil
}

// recordingFailedFunc is the recorder's Failed callback. A function of its
// own, so the event is copied to the heap only for recorded sessions.
func (a *Agent) recordingFailedFunc(ev audit.Event, action string) func(error) {
	return func(err error) { a.recordingFailed(ev, action, err) }
}

// recordingFailed audits a recording write failure.
func (a *Agent) recordingFailed(ev audit.Event, action string, err error) {
	e := audit.Event{
		Event: EventRecordingError, Verdict: ev.Verdict, Rule: ev.Rule, Mode: ev.Mode,
		Session: ev.Session, Source: ev.Source, Destination: ev.Destination, Process: ev.Process,
	}
	if action == config.OnErrorClose {
		e.Reason = "recording failed, session closed (recordings.onError: close): " + err.Error()
	} else {
		e.Reason = "recording failed, session continues unrecorded (recordings.onError: continue): " + err.Error()
	}
	a.audit.Log(e)
	a.metrics.RecordingErrors.WithLabelValues(ev.Rule, action).Inc()
}

// finishRecording seals a session's recording.
func (a *Agent) finishRecording(rec *recorder.Recorder, end audit.Event, stats relay.Stats, relayErr error) {
	if rec == nil {
		return
	}
	e := recording.End{End: time.Now(), BytesSent: stats.Sent, BytesReceived: stats.Received, Verdict: end.Verdict}
	if relayErr != nil {
		e.Reason = relayErr.Error()
	}
	if err := rec.Finish(e); err != nil && rec.Err() == nil {
		a.log.Warn("seal recording", "session", end.Session, "error", err)
	}
}

// workloadLabel is the bounded workload label value of metrics.workloadLabels.
func workloadLabel(p *audit.Process) string {
	switch {
	case p == nil:
		return audit.Unknown
	case p.Pod != nil:
		return p.Pod.Namespace + "/" + p.Pod.ServiceAccount
	case p.Container != nil:
		return "container/" + p.Container.Runtime
	case strings.HasSuffix(p.CgroupPath, ".service"):
		return path.Base(p.CgroupPath)
	case p.CgroupPath != "":
		return "host"
	}
	return audit.Unknown
}
