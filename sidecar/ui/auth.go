package ui

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
)

// cookieName is the session cookie set by POST /ui/api/login.
const cookieName = "baton_ui"

// sessionValue is the cookie's value for token: an HMAC of a fixed text
// keyed by the token, so that it proves knowledge of the token without
// holding it, and changing the token ends every session.
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("baton ui session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// authorized requires, when a token is set, the bearer token or the
// session cookie.
func (u *UI) authorized(h http.Handler) http.Handler {
	if u.cfg.Token == "" {
		return h
	}
	bearer := []byte("Bearer " + u.cfg.Token)
	session := []byte(sessionValue(u.cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), bearer) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(cookieName); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), session) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusUnauthorized, "the admin token is required: log in with it (--admin-token-file)")
	})
}

// login checks {"token": "..."} and sets the session cookie (HttpOnly,
// SameSite=Strict, Secure over TLS, path /ui/).
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(w, r) {
		return
	}
	if u.cfg.Token == "" {
		writeJSON(w, map[string]any{"ok": true})
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := readJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if subtle.ConstantTimeCompare([]byte(body.Token), []byte(u.cfg.Token)) != 1 {
		writeError(w, http.StatusUnauthorized, "token: not the admin token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sessionValue(u.cfg.Token), Path: "/ui/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	writeJSON(w, map[string]any{"ok": true})
}

// crossOrigin refuses requests a browser marks as coming from another
// site (Sec-Fetch-Site, or an Origin that is not this host).
var crossOrigin = http.NewCrossOriginProtection()

// sameOrigin answers 403 and returns false for a cross-origin request.
func sameOrigin(w http.ResponseWriter, r *http.Request) bool {
	if err := crossOrigin.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
		return false
	}
	return true
}

// action wraps an operator action: actions must be on, and the request
// same-origin, carrying the page's CSRF token and a JSON body.
func (u *UI) action(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !u.cfg.Actions {
			msg := "actions are off on this page"
			if u.cfg.ActionsOff != "" {
				msg += ": " + u.cfg.ActionsOff
			}
			writeError(w, http.StatusForbidden, msg)
			return
		}
		if !sameOrigin(w, r) {
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Baton-CSRF")), []byte(u.csrf)) != 1 {
			writeError(w, http.StatusForbidden, "X-Baton-CSRF: missing or not this page's token; reload the page")
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Type: must be application/json")
			return
		}
		h(w, r)
	})
}

// readJSON decodes a small JSON body into v.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
