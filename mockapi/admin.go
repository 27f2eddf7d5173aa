package mockapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// The admin endpoint lets tests and demos written in other languages (or a shell) drive
// the mock the way Go tests use the Server methods. It is unauthenticated: the mock is a
// test fixture and listens on loopback by default.

// faultJSON is a Fault on the admin endpoint: lowerCamel names, durations as Go duration
// strings ("150ms").
type faultJSON struct {
	Method               string  `json:"method"`
	Client               string  `json:"client,omitempty"`
	Count                int     `json:"count,omitempty"`
	ErrorRate            float64 `json:"errorRate,omitempty"`
	ErrorCode            int     `json:"errorCode,omitempty"`
	ErrorMessage         string  `json:"errorMessage,omitempty"`
	Latency              string  `json:"latency,omitempty"`
	LatencyJitter        string  `json:"latencyJitter,omitempty"`
	HTTP500Rate          float64 `json:"http500Rate,omitempty"`
	DropAfterCommitRate  float64 `json:"dropAfterCommitRate,omitempty"`
	FailBeforeCommitRate float64 `json:"failBeforeCommitRate,omitempty"`
	// Matched is reported by GET only.
	Matched int `json:"matched,omitempty"`
}

// toFault validates the JSON form and converts it.
func (j faultJSON) toFault() (Fault, error) {
	f := Fault{
		Client:               j.Client,
		Count:                j.Count,
		ErrorRate:            j.ErrorRate,
		ErrorCode:            j.ErrorCode,
		ErrorMessage:         j.ErrorMessage,
		HTTP500Rate:          j.HTTP500Rate,
		DropAfterCommitRate:  j.DropAfterCommitRate,
		FailBeforeCommitRate: j.FailBeforeCommitRate,
	}
	var err error
	if j.Latency != "" {
		if f.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return Fault{}, fmt.Errorf("latency: %w", err)
		}
	}
	if j.LatencyJitter != "" {
		if f.LatencyJitter, err = time.ParseDuration(j.LatencyJitter); err != nil {
			return Fault{}, fmt.Errorf("latencyJitter: %w", err)
		}
	}
	return f, f.Validate()
}

// Validate reports values that cannot mean anything: rates outside [0,1], negative
// counts or durations.
func (f Fault) Validate() error {
	for name, r := range map[string]float64{
		"errorRate": f.ErrorRate, "http500Rate": f.HTTP500Rate,
		"dropAfterCommitRate": f.DropAfterCommitRate, "failBeforeCommitRate": f.FailBeforeCommitRate,
	} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s must be within [0,1], got %v", name, r)
		}
	}
	if f.Count < 0 {
		return fmt.Errorf("count must not be negative, got %d", f.Count)
	}
	if f.Latency < 0 || f.LatencyJitter < 0 {
		return errors.New("latency and latencyJitter must not be negative")
	}
	return nil
}

func faultToJSON(method string, f Fault, matched int) faultJSON {
	j := faultJSON{
		Method: method, Client: f.Client, Count: f.Count,
		ErrorRate: f.ErrorRate, ErrorCode: f.ErrorCode, ErrorMessage: f.ErrorMessage,
		HTTP500Rate: f.HTTP500Rate, DropAfterCommitRate: f.DropAfterCommitRate,
		FailBeforeCommitRate: f.FailBeforeCommitRate, Matched: matched,
	}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	if f.LatencyJitter != 0 {
		j.LatencyJitter = f.LatencyJitter.String()
	}
	return j
}

type faultsDoc struct {
	Faults            []faultJSON `json:"faults"`
	ExpireTokensAfter int         `json:"expireTokensAfter"`
}

type faultPut struct {
	faultJSON
	// ExpireTokensAfter, when present, sets token expiry; a body with only this field
	// (no method) changes nothing else.
	ExpireTokensAfter *int `json:"expireTokensAfter,omitempty"`
}

func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		entries, expire := s.faults.list()
		doc := faultsDoc{Faults: []faultJSON{}, ExpireTokensAfter: expire}
		for _, e := range entries {
			doc.Faults = append(doc.Faults, faultToJSON(e.Method, e.Fault, e.Matched))
		}
		writeJSON(w, http.StatusOK, doc)
	})
	mux.HandleFunc("PUT /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var req faultPut
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSONError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
			return
		}
		if req.Method == "" && req.ExpireTokensAfter == nil {
			writeJSONError(w, http.StatusBadRequest, `"method" is required (a method name or "*")`)
			return
		}
		if req.Method != "" {
			f, err := req.toFault()
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, err.Error())
				return
			}
			s.faults.Set(req.Method, f)
		}
		if req.ExpireTokensAfter != nil {
			s.faults.ExpireTokensAfter(*req.ExpireTokensAfter)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		s.faults.Clear()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/reservations", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Name  string `json:"name"`
			Owner string `json:"owner"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			writeJSONError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"id": s.CreateReservation(req.Name, req.Owner)})
	})
	mux.HandleFunc("GET /admin/reservations/{id}", func(w http.ResponseWriter, r *http.Request) {
		snap, err := s.Snapshot(r.PathValue("id"))
		if err != nil {
			writeJSONError(w, http.StatusNotFound, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, snap)
	})
	mux.HandleFunc("GET /admin/reservations/{id}/history", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, err := s.Snapshot(id); err != nil {
			writeJSONError(w, http.StatusNotFound, err.Error())
			return
		}
		h := s.History(id)
		if h == nil {
			h = []Mutation{}
		}
		writeJSON(w, http.StatusOK, h)
	})
	mux.HandleFunc("GET /admin/reservations/{id}/messages", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, err := s.Snapshot(id); err != nil {
			writeJSONError(w, http.StatusNotFound, err.Error())
			return
		}
		m := s.Messages(id)
		if m == nil {
			m = []string{}
		}
		writeJSON(w, http.StatusOK, m)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
