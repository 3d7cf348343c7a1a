//! Authentication and per-identity rate limiting, shared by every API.
//!
//! Each API takes its credential from its own place (a bearer token for the native and AVEVA
//! APIs; the other dialects bring theirs) and answers failures in its own format; this module
//! does the checking. A request is authenticated against this node's applied state, so any
//! node can check it; what it may then do is judged again by the core when a change applies
//! (see `baton_core::identity`), so a revocation committed first always wins.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use baton_core::{Actor, IdentityName, Principal};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::coordinator::{Consistency, Coordinator, Served};

/// How often an open stream (events, heartbeats) checks that its caller may still hold it.
pub const RECHECK: Duration = Duration::from_millis(500);

/// Whether the caller who opened a stream (of `group`'s events or heartbeats, if given) may
/// still hold it: its identity is active, with the role it had and the credentials it
/// presented (a rotation since ends the stream, as a revocation does), and it may still use
/// the group. Read from this node's applied state, so a revocation, a rotation or an
/// allowed-owners change is seen as soon as it applies here. A group deleted since is no
/// reason to close a stream.
pub(crate) async fn still_allowed<C: Coordinator>(
    coordinator: &C,
    caller: &Caller,
    group: Option<&baton_core::GroupKey>,
) -> bool {
    let current = coordinator.identity(&caller.principal.name);
    let same = current.is_some_and(|i| {
        i.is_active() && i.principal() == caller.principal && i.token == caller.credential
    });
    if !same {
        return false;
    }
    let Some(key) = group else { return true };
    match coordinator.read(baton_core::Query::Group(key.clone()), Consistency::Local).await {
        Ok(Served { value: baton_core::QueryResult::Group(Some(g)), .. }) => {
            caller.principal.may_use(&g)
        }
        _ => true,
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// Its identity's credential when it was authenticated (each rotation makes a new one,
    /// with a new salt). A stream it opens ends once this is replaced.
    pub credential: baton_core::Credential,
    /// The client's address, when the server knows it.
    pub from: Option<SocketAddr>,
    /// The request's `Idempotency-Key`, if it sent one (native and AVEVA APIs).
    pub request_key: Option<String>,
}

impl Caller {
    /// The audit trail's view of this caller (with the request's idempotency key).
    pub fn actor(&self) -> Actor {
        Actor {
            identity: self.principal.name.clone(),
            from: self.from.map(|a| a.to_string()),
            request_key: self.request_key.clone(),
        }
    }
}

/// The header of a write that must apply once however often it is sent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Why a request was not let in. Messages name no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credential was presented.
    #[error("the request carries no credential")]
    Missing,
    /// The credential is malformed, unknown, wrong or revoked (not told apart, so a caller
    /// learns nothing about which identities exist).
    #[error("the credential is not valid")]
    Invalid,
    /// The `Idempotency-Key` header is not 1 to 128 visible ASCII characters.
    #[error("the Idempotency-Key header must be 1 to 128 visible ASCII characters")]
    BadRequestKey,
    /// A signature another client address already presented (see
    /// [`baton_auth::replay`]).
    #[error("the signature was already used by another client")]
    Replayed,
    /// The identity sends faster than allowed.
    #[error("too many requests from this identity")]
    Throttled {
        /// When to retry.
        retry_after: Duration,
    },
}

impl Denied {
    /// Whole seconds to put in `Retry-After` (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Denied::Throttled { retry_after } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
            _ => 1,
        }
    }
}

/// Requests per second each identity may send, and the burst it may use up at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second; 0 turns limiting off.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 2_000, burst: 4_000 }
    }
}

/// The node's gate: the rate limiter, keyed by identity name.
pub struct Gate {
    limiter: Option<DefaultKeyedRateLimiter<IdentityName>>,
}

impl Gate {
    /// A gate with the given limit.
    pub fn new(limit: RateLimit) -> Self {
        let limiter = NonZeroU32::new(limit.per_second).map(|rate| {
            let burst = NonZeroU32::new(limit.burst.max(limit.per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Counts one request of `principal` against its rate.
    pub fn admit(&self, principal: &Principal) -> Result<(), Denied> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&principal.name).map_err(|not_until| Denied::Throttled {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(RateLimit::default())
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Which tokens a route takes.
#[derive(Clone, Copy, Debug)]
pub enum Accepts<'a> {
    /// An identity's own token only.
    OwnTokens,
    /// An identity's own token, or a session token these keys made. Only the routes of the
    /// dialects whose logins hand sessions out (HCX, Cinder) take them: a session can never
    /// manage identities (and so never become a lasting token) or hold a stream open.
    OwnTokensOrSessions(&'a baton_auth::SessionKeys),
}

/// Checks `token` (an identity's own, or a session token where `accepts` says so) against this
/// node's applied state, then the identity's rate.
pub fn authenticate<C: Coordinator>(
    coordinator: &C,
    gate: &Gate,
    accepts: Accepts<'_>,
    token: Option<&str>,
    from: Option<SocketAddr>,
) -> Result<Caller, Denied> {
    let token = token.ok_or(Denied::Missing)?;
    let session = match accepts {
        Accepts::OwnTokensOrSessions(keys) => baton_auth::parse_session(token).map(|s| (keys, s)),
        Accepts::OwnTokens => None,
    };
    let identity = match session {
        Some((sessions, session)) => {
            let identity = coordinator.identity(&session.name).ok_or(Denied::Invalid)?;
            let live = sessions.verify(&session, &identity.token, unix_now());
            identity.is_active().then_some(identity).filter(|_| live)
        }
        None => {
            let parsed = baton_auth::parse_token(token).map_err(|_| Denied::Invalid)?;
            let identity = coordinator.identity(&parsed.name).ok_or(Denied::Invalid)?;
            let right = baton_auth::verify_token(&identity.token, parsed.secret);
            identity.is_active().then_some(identity).filter(|_| right)
        }
    }
    .ok_or(Denied::Invalid)?;
    let principal = identity.principal();
    gate.admit(&principal)?;
    Ok(Caller { principal, credential: identity.token, from, request_key: None })
}

/// A session token for `caller`, ending [`baton_auth::SESSION_LIFETIME_SECS`] from now, or
/// when `presented` (the token it logged in with) ends if that is a session ending sooner;
/// and when it ends, in Unix seconds.
pub fn session_for(
    sessions: &baton_auth::SessionKeys,
    caller: &Caller,
    presented: &str,
) -> (String, i64) {
    let mut expires = unix_now().saturating_add(baton_auth::SESSION_LIFETIME_SECS);
    if let Some(session) = baton_auth::parse_session(presented) {
        expires = expires.min(session.expires);
    }
    (sessions.issue(&caller.principal.name, &caller.credential, expires), expires)
}

/// The node's clock in Unix seconds, for timestamps callers sign and sessions' ends.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checks Uplynk-style signed parameters (`msg`, `sig`) against this node's applied state:
/// the owner must be an active identity with a signing key, which the node's sealer opens;
/// the signature must not have come from another client address (the node's replay cache);
/// then the identity's rate.
pub fn authenticate_signed<C: Coordinator>(
    state: &crate::AppState<C>,
    msg: Option<&str>,
    sig: Option<&str>,
    from: Option<SocketAddr>,
) -> Result<Caller, Denied> {
    let (Some(msg), Some(sig)) = (msg, sig) else { return Err(Denied::Missing) };
    let params = baton_auth::signed::decode_msg(msg, unix_now()).map_err(|_| Denied::Invalid)?;
    let identity = state.coordinator.identity(&params.owner).ok_or(Denied::Invalid)?;
    let sealed = identity.signing_key.as_ref().filter(|_| identity.is_active());
    let key = sealed.and_then(|s| state.sealer.open(s).ok()).ok_or(Denied::Invalid)?;
    baton_auth::signed::verify_sig(&key, msg, sig).map_err(|_| Denied::Invalid)?;
    let admitted = state.replay.lock().expect("the replay cache's lock is never poisoned").admit(
        sig,
        &identity.name,
        from.map(|a| a.ip()),
        std::time::Instant::now(),
    );
    admitted.map_err(|_| Denied::Replayed)?;
    let gate = &state.gate;
    let principal = identity.principal();
    gate.admit(&principal)?;
    Ok(Caller { principal, credential: identity.token, from, request_key: None })
}

/// Where a token-based API finds its callers' tokens, and whether session tokens count.
#[derive(Clone, Copy)]
pub enum Tokens {
    /// An identity's own token, where the function finds it.
    Own(fn(&HeaderMap) -> Option<&str>),
    /// An identity's own token or a session token, where the function finds it.
    OwnOrSession(fn(&HeaderMap) -> Option<&str>),
}

/// A middleware's whole job for the token-based APIs: authenticate the token `tokens` finds,
/// leave the [`Caller`] in the request and run the rest, or answer `refuse` (the API's own
/// 401 or 429).
pub async fn let_in<C: Coordinator>(
    state: &crate::AppState<C>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
    tokens: Tokens,
    refuse: fn(Denied) -> axum::response::Response,
) -> axum::response::Response {
    let (mut parts, body) = request.into_parts();
    let from = client_addr(&parts);
    let request_key = match parts.headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if baton_core::idempotency::valid_key(key) => Some(key.to_string()),
        Some(_) => return refuse(Denied::BadRequestKey),
    };
    let (token_of, accepts) = match tokens {
        Tokens::Own(find) => (find, Accepts::OwnTokens),
        Tokens::OwnOrSession(find) => (find, Accepts::OwnTokensOrSessions(&state.sessions)),
    };
    let authenticated =
        authenticate(&*state.coordinator, &state.gate, accepts, token_of(&parts.headers), from);
    match authenticated.map(|caller| Caller { request_key, ..caller }) {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(axum::extract::Request::from_parts(parts, body)).await
        }
        Err(denied) => refuse(denied),
    }
}

/// The client's address, if the server recorded it.
pub fn client_addr(parts: &Parts) -> Option<SocketAddr> {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr)
}
