package transcript

import (
	"fmt"
	"time"

	"github.com/intransit/intransit/pkg/recording"
)

// The JSON export's shape. Bodies and raw data are text when valid UTF-8,
// else base64 with "encoding": "base64".
type jsonTranscript struct {
	Meta      recording.Meta `json:"meta"`
	End       *recording.End `json:"end"`
	Status    string         `json:"status"`
	Problems  []string       `json:"problems,omitempty"`
	Exchanges []jsonExchange `json:"exchanges"`
	Raw       []jsonSegment  `json:"raw"`
	Notes     []jsonNote     `json:"notes"`
}

type jsonExchange struct {
	N        uint32        `json:"n"`
	Request  *jsonMessage  `json:"request"`
	Interim  []jsonMessage `json:"interim,omitempty"`
	Response *jsonMessage  `json:"response"`
}

type jsonMessage struct {
	recording.HTTPHead
	Start    time.Time          `json:"start"`
	End      time.Time          `json:"end"`
	Complete bool               `json:"complete"`
	BodySize int64              `json:"body_size"` // on the wire, before redaction
	Body     string             `json:"body,omitempty"`
	Encoding string             `json:"encoding,omitempty"`
	Trailers []recording.Header `json:"trailers,omitempty"`
}

type jsonSegment struct {
	Time     time.Time `json:"time"`
	Dir      string    `json:"dir"`
	Size     int       `json:"size"`
	Data     string    `json:"data"`
	Encoding string    `json:"encoding,omitempty"`
}

type jsonNote struct {
	Time time.Time `json:"time"`
	Dir  string    `json:"dir,omitempty"`
	recording.Note
}

// JSON exports the whole transcript as indented JSON.
func JSON(t *Transcript) ([]byte, error) {
	out := jsonTranscript{
		Meta:      t.Meta,
		End:       t.End,
		Status:    t.Status,
		Problems:  t.Problems,
		Exchanges: make([]jsonExchange, 0, len(t.Exchanges)),
		Raw:       make([]jsonSegment, 0, len(t.Raw)),
		Notes:     make([]jsonNote, 0, len(t.Notes)),
	}
	for _, ex := range t.Exchanges {
		je := jsonExchange{N: ex.N, Request: jsonMsg(ex.Request), Response: jsonMsg(ex.Response)}
		for _, m := range ex.Interim {
			je.Interim = append(je.Interim, *jsonMsg(m))
		}
		out.Exchanges = append(out.Exchanges, je)
	}
	for _, s := range t.Raw {
		js := jsonSegment{Time: s.Time, Dir: dirName(s.Dir), Size: len(s.Data)}
		js.Data, js.Encoding = encodeBody(s.Data)
		out.Raw = append(out.Raw, js)
	}
	// Notes with their time and direction, which only the events carry.
	for _, ev := range t.Events {
		if ev.Kind == EventNote {
			n := jsonNote{Time: ev.Time, Note: *ev.Note}
			if ev.Dir != recording.DirNone {
				n.Dir = dirName(ev.Dir)
			}
			out.Notes = append(out.Notes, n)
		}
	}
	b, err := marshal(out)
	if err != nil {
		return nil, fmt.Errorf("session %s: JSON: %w", t.Meta.ID, err)
	}
	return b, nil
}

func jsonMsg(m *Message) *jsonMessage {
	if m == nil {
		return nil
	}
	jm := &jsonMessage{
		HTTPHead: m.Head, Start: m.Start, End: m.End, Complete: m.Complete,
		BodySize: m.BodySize, Trailers: m.Trailers,
	}
	if len(m.Body) > 0 {
		jm.Body, jm.Encoding = encodeBody(m.Body)
	}
	return jm
}
