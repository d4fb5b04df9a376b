//! Signing in and out of the pages.
//!
//! `/login` checks the name and password with the Flight SQL service's sign-in
//! ([`rxcube_server::Service::sign_in_from`]): the same directory and argon2 hashes, the same
//! throttle of failed sign-ins (per name and per address, shared with Flight SQL clients) and
//! the same audit entries (`login`, `login_failed`, `denied`). A sign-in opens a session: a
//! random 256-bit token in a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the pages are
//! served over TLS) naming the account's [`Credential`] as it was at sign-in. Every request
//! checks the credential against the directory as stored now, so a removed user (or one added
//! again, or whose password, scope or groups changed) is signed out at once. Sign-out is a
//! POST carrying the session's CSRF token; POSTs from another origin are refused. The sign-in
//! form carries a signed CSRF token too (a double submit: the form's `csrf` field and the
//! `rxcube_login` cookie hold the same token, HMAC-signed by a key of this server run and good
//! for an hour); a sign-in without it is refused with a 403 page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use rxcube_access::Reach;
use rxcube_access::audit::{Entry, Event};
use rxcube_access::directory::Credential;
use rxcube_access::{Level, Principal};
use rxcube_server::Code;
use serde::Deserialize;

use crate::Web;
use crate::data::PageError;
use crate::page::{layout, respond};

/// The session cookie's name.
pub const COOKIE: &str = "rxcube_session";
/// The sign-in form's CSRF cookie: the same signed token as the form's `csrf` field.
pub const LOGIN_COOKIE: &str = "rxcube_login";
/// How long a sign-in form may be sent after it was served.
const LOGIN_FORM_TTL: Duration = Duration::from_secs(3600);

/// The key that signs the sign-in forms' CSRF tokens (random, one per server run).
pub struct LoginKey(ring::hmac::Key);

impl LoginKey {
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Without a system random source no key is safe; fall back to the session secrets'.
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret().as_bytes()));
        Self(key)
    }

    fn mac(&self, body: &str) -> String {
        let tag = ring::hmac::sign(&self.0, format!("rxcube-login:{body}").as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new token, good until `now + LOGIN_FORM_TTL`: `<expiry>.<nonce>.<mac>`.
    fn issue(&self) -> String {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(LOGIN_FORM_TTL)
            .as_secs();
        let body = format!("{expires}.{}", uuid::Uuid::new_v4().simple());
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// Whether `token` was issued by this key and has not expired.
    fn valid(&self, token: &str) -> bool {
        let Some((body, mac)) = token.rsplit_once('.') else {
            return false;
        };
        let Some(expires) = body
            .split_once('.')
            .and_then(|(e, _)| e.parse::<u64>().ok())
        else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        same_secret(&self.mac(body), mac) && now < expires
    }
}

struct WebSession {
    credential: Credential,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// The signed-in sessions of the pages.
pub struct Sessions {
    map: Mutex<HashMap<String, WebSession>>,
    ttl: Duration,
    per_user: usize,
}

/// A unique, unguessable identifier (256 random bits).
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(ttl: Duration, per_user: usize) -> Self {
        Self {
            map: Mutex::default(),
            ttl,
            per_user,
        }
    }

    /// Opens a session for `credential`: its token and CSRF token. The user's oldest sessions
    /// beyond `per_user` end, and expired ones are forgotten.
    fn open(&self, credential: Credential) -> (String, String) {
        let token = secret();
        let csrf = secret();
        let now = Instant::now();
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, s| s.expires > now);
            let mut own: Vec<(Instant, String)> = map
                .iter()
                .filter(|(_, s)| s.credential.name == credential.name)
                .map(|(k, s)| (s.created, k.clone()))
                .collect();
            own.sort();
            let keep = self.per_user - 1;
            let excess = own.len().saturating_sub(keep);
            for (_, k) in own.into_iter().take(excess) {
                map.remove(&k);
            }
            map.insert(
                token.clone(),
                WebSession {
                    credential,
                    csrf: csrf.clone(),
                    created: now,
                    expires: now + self.ttl,
                },
            );
        }
        (token, csrf)
    }

    /// The credential and CSRF token of a live session.
    fn get(&self, token: &str) -> Option<(Credential, String)> {
        let mut map = self.map.lock().ok()?;
        let s = map.get(token)?;
        if s.expires <= Instant::now() {
            map.remove(token);
            return None;
        }
        Some((s.credential.clone(), s.csrf.clone()))
    }

    fn end(&self, token: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(token);
        }
    }

    /// How many sessions are open (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client's address, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Remote(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// A signed-in user making a request: who, what its scope reaches.
pub struct SignedIn {
    pub principal: Principal,
    pub csrf: String,
    /// What names the session to the server's limits (not the token itself).
    pub session: String,
    pub reach: Reach,
    pub client: Option<String>,
}

impl SignedIn {
    /// Whether the card of `level`/`node` is within the scope (for links; the pages
    /// themselves are read through the scoped session whatever this says).
    pub fn reaches(&self, level: Level, node: &str) -> bool {
        self.reach.is_everything() || self.reach.nodes(level).contains(node)
    }

    /// The path of the user's own card.
    pub fn home(&self) -> String {
        card_path(self.principal.scope.level, &self.principal.scope.node)
    }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `/card/<level>/<node>`.
pub fn card_path(level: Level, node: &str) -> String {
    format!("/card/{}/{}", level.as_str(), encode(node))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn session_cookie(web: &Web, token: &str, max_age: u64) -> HeaderValue {
    let secure = if web.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("rxcube_session=; Path=/; Max-Age=0"))
}

/// Where a signed-out visitor of `uri` is sent: `/login?next=<path>`.
fn to_login(web: &Web, uri: &Uri) -> Response {
    let next = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| safe_next(p))
        .map(|p| format!("/login?next={}", encode(&p)))
        .unwrap_or_else(|| "/login".into());
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(web, "", 0));
    r
}

/// A path of this site to go to after signing in: absolute, not `//host` or `/\host`.
fn safe_next(p: &str) -> bool {
    // Printable ASCII only: what a request line holds, and a valid `Location` header.
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && p.len() <= 2048
        && p.bytes().all(|b| b.is_ascii_graphic())
}

/// The signed-in user of a request, or the redirect to `/login`.
pub async fn signed_in(
    web: &Web,
    headers: &HeaderMap,
    uri: &Uri,
    remote: Remote,
) -> Result<SignedIn, Response> {
    let Some(token) = cookie_token(headers) else {
        return Err(to_login(web, uri));
    };
    let Some((credential, csrf)) = web.sessions.get(&token) else {
        return Err(to_login(web, uri));
    };
    let principal = match web.service.current_principal(&credential).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            web.sessions.end(&token);
            return Err(to_login(web, uri));
        }
        Err(e) => return Err(unavailable(e.message())),
    };
    let reach = web.service.reach(&principal);
    Ok(SignedIn {
        principal,
        csrf,
        session: format!("web:{}", &token[..16]),
        reach,
        client: remote.0.map(|a| a.to_string()),
    })
}

fn unavailable(why: &str) -> Response {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Unavailable",
            None,
            &[],
            html! { h1 { "Unavailable" } p.error { (why) } },
        ),
    )
}

/// Records a refused page request of `user` in the audit log.
pub fn audit_denied(web: &Web, user: &SignedIn, what: &str) {
    let mut e = Entry::new(&user.principal.name, Event::Denied);
    e.client = user.client.clone();
    e.detail = Some(format!("web: {what}"));
    web.service.audit().record(e);
}

/// The page of an error of `user`'s request of `uri`; a 404 (a node that does not exist, or
/// is not the user's) is audited as a denial, `why` saying what was not found.
pub fn refused(web: &Web, user: &SignedIn, uri: &Uri, e: &PageError, why: &str) -> Response {
    if *e == PageError::NotFound {
        let shown: String = uri.path().chars().take(200).collect();
        audit_denied(web, user, &format!("{shown}: {why}"));
    }
    crate::page::error(e, Some(user))
}

/// `/`: the user's own card.
pub async fn home(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    remote: Remote,
) -> Response {
    match signed_in(&web, &headers, &uri, remote).await {
        Ok(user) => Redirect::to(&user.home()).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The sign-in form, with a new CSRF token in its `csrf` field and in the `rxcube_login`
/// cookie (signed double submit: a POST must carry both, equal and signed by this server).
fn login_page(
    web: &Web,
    status: StatusCode,
    message: Option<&str>,
    next: Option<&str>,
) -> Response {
    let token = web.login_key.issue();
    let secure = if web.secure { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LOGIN_FORM_TTL.as_secs()
    ));
    let mut r = respond(
        status,
        layout(
            "Sign in",
            None,
            &[],
            html! {
                h1 { "Sign in" }
                @if let Some(m) = message { p.error role="alert" { (m) } }
                form.login method="post" action="/login" {
                    label { "User name" br; input type="text" name="username" autocomplete="username" required autofocus; }
                    label { "Password" br; input type="password" name="password" autocomplete="current-password" required; }
                    @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                    input type="hidden" name="csrf" value=(token);
                    button type="submit" { "Sign in" }
                }
                p.note { "The accounts of rxcube users (the same as for Flight SQL clients)." }
            },
        ),
    );
    if let Ok(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /login`: the form (signed-in users go to their card).
pub async fn login_form(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(token) = cookie_token(&headers)
        && let Some((credential, _)) = web.sessions.get(&token)
        && let Ok(Some(p)) = web.service.current_principal(&credential).await
    {
        return Redirect::to(&card_path(p.scope.level, &p.scope.node)).into_response();
    }
    let next = query.ok().and_then(|q| q.0.next).filter(|n| safe_next(n));
    login_page(&web, StatusCode::OK, None, next.as_deref())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    next: Option<String>,
    csrf: Option<String>,
}

/// A POST from a page of another site: refused (`SameSite` keeps the cookie off it; this
/// keeps a signed-out browser from being signed in to an account of the attacker's too).
fn cross_site(headers: &HeaderMap) -> bool {
    // Browsers that say where a request comes from are believed; others are checked by their
    // Origin header (`null` from a page that hides its origin: refused).
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !(site == "same-origin" || site == "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    origin == "null" || origin_host != host
}

fn forbidden(message: &str) -> Response {
    respond(
        StatusCode::FORBIDDEN,
        layout(
            "Refused",
            None,
            &[],
            html! { h1 { "Refused" } p.error { (message) } p { a href="/" { "Your score card" } } },
        ),
    )
}

/// A sign-in form without this server's token (none, expired, or another's): 403.
fn login_refused() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        layout(
            "Sign-in form expired",
            None,
            &[],
            html! {
                h1 { "Sign-in form expired" }
                p.error { "This sign-in form is not one this server gave your browser, or it has expired (forms last an hour). Open the sign-in page again and sign in there." }
                p { a href="/login" { "Sign in" } }
            },
        ),
    )
}

/// `POST /login`: checks the name and password; on success opens a session and goes to
/// `next` or the user's card.
pub async fn login(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    remote: Remote,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return forbidden("Sign-in forms are accepted from this site's pages only.");
    }
    let form = form.map(|f| f.0).ok();
    // The form's token must be the cookie's, and signed by this server: a page of another
    // site can neither read the form's token nor set the cookie.
    let given = form.as_ref().and_then(|f| f.csrf.as_deref()).unwrap_or("");
    let set = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !(same_secret(given, &set) && web.login_key.valid(given)) {
        return login_refused();
    }
    let Some(form) = form else {
        return login_page(
            &web,
            StatusCode::BAD_REQUEST,
            Some("Enter a user name and a password."),
            None,
        );
    };
    let next = form.next.filter(|n| safe_next(n));
    let (username, password) = (
        form.username.unwrap_or_default(),
        form.password.unwrap_or_default(),
    );
    if username.is_empty()
        || password.is_empty()
        || username.len() > 256
        || password.len() > 1024
        || username.chars().any(char::is_control)
    {
        return login_page(
            &web,
            StatusCode::BAD_REQUEST,
            Some("Enter a user name and a password."),
            next.as_deref(),
        );
    }
    match web
        .service
        .sign_in_from(&username, &password, remote.0)
        .await
    {
        Ok((principal, credential)) => {
            let (token, _) = web.sessions.open(credential);
            let to =
                next.unwrap_or_else(|| card_path(principal.scope.level, &principal.scope.node));
            let mut r = Redirect::to(&to).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&web, &token, web.sessions.ttl.as_secs().max(1)),
            );
            r
        }
        Err(status) => match status.code() {
            Code::ResourceExhausted => login_page(
                &web,
                StatusCode::TOO_MANY_REQUESTS,
                Some(status.message()),
                next.as_deref(),
            ),
            Code::Unavailable => unavailable("the server cannot check sign-ins now"),
            _ => login_page(
                &web,
                StatusCode::UNAUTHORIZED,
                Some("Invalid user name or password."),
                next.as_deref(),
            ),
        },
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `POST /logout`: ends the session when the form carries its CSRF token.
pub async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    remote: Remote,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let token = cookie_token(&headers);
    let session = token.as_deref().and_then(|t| web.sessions.get(t));
    let Some((credential, csrf)) = session else {
        return to_login(&web, &Uri::from_static("/"));
    };
    let given = form.map(|f| f.0.csrf).unwrap_or_default();
    if cross_site(&headers) || !same_secret(&given, &csrf) {
        let mut e = Entry::new(&credential.name, Event::Denied);
        e.client = remote.0.map(|a| a.to_string());
        e.detail = Some("web: sign-out without this session's CSRF token".into());
        web.service.audit().record(e);
        return forbidden("This sign-out form is not from your session's pages.");
    }
    if let Some(t) = token {
        web.sessions.end(&t);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&web, "", 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths_stay_on_this_site() {
        assert!(safe_next("/card/pharmacy/RX101?period=2024-03-03"));
        assert!(!safe_next("//evil.example/x"));
        assert!(!safe_next("/\\evil.example"));
        assert!(!safe_next("https://evil.example/"));
        assert!(!safe_next("/a\r\nSet-Cookie: x"));
        assert!(!safe_next("/caf\u{e9}"));
        assert!(!safe_next("/a b"));
    }

    #[test]
    fn encoding_keeps_unreserved_characters_only() {
        assert_eq!(encode("RX101"), "RX101");
        assert_eq!(encode("Los Angeles"), "Los%20Angeles");
        assert_eq!(encode("a/b?c&d#e'"), "a%2Fb%3Fc%26d%23e%27");
    }

    #[test]
    fn sign_in_tokens_are_signed_by_their_server_and_expire() {
        let key = LoginKey::generate();
        let token = key.issue();
        assert!(key.valid(&token));
        assert!(!LoginKey::generate().valid(&token));
        // The same nonce, expired: its signature is good but its time is past.
        let expired = format!("1.{}", uuid::Uuid::new_v4().simple());
        assert!(!key.valid(&format!("{expired}.{}", key.mac(&expired))));
        // Changing the expiry breaks the signature.
        let (expires, rest) = token.split_once('.').expect("expiry");
        let later: u64 = expires.parse::<u64>().expect("number") + 3600;
        assert!(!key.valid(&format!("{later}.{rest}")));
        for bad in ["", ".", "..", "x.y.z", &token[..token.len() - 1]] {
            assert!(!key.valid(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rxcube_session=tok; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("tok"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("rxcube_sessionx=1"),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn posts_from_other_origins_are_cross_site() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h));
        for (site, cross) in [
            ("cross-site", true),
            ("same-site", true),
            ("same-origin", false),
            ("none", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("sec-fetch-site", HeaderValue::from_static(site));
            h.insert(header::ORIGIN, HeaderValue::from_static("null"));
            assert_eq!(cross_site(&h), cross, "{site}");
        }
    }
}
