//! How a client authenticates, and what it does when the core asks for a token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::client::{Auth, TokenReason};

/// Why a [`TokenProvider`] gives no token (`docs/protocol.md` §6.8).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// None can be had *now* (the auth service is unreachable, …): the client keeps its
    /// connection while the current token lasts, or fails the attempt, and asks again after
    /// a backoff delay.
    Unavailable(String),
    /// The application refuses a token (the user signed out, lost access): the client goes
    /// to Failed with `token_unavailable` and does not retry.
    Refused(String),
}

impl From<String> for TokenError {
    /// A plain error message means "not now": [`TokenError::Unavailable`].
    fn from(reason: String) -> TokenError {
        TokenError::Unavailable(reason)
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Unavailable(reason) => write!(f, "no token now: {reason}"),
            TokenError::Refused(reason) => write!(f, "token refused: {reason}"),
        }
    }
}

/// A pending answer of a [`TokenProvider`]: a token, or why none can be had.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, TokenError>> + Send>>;

/// Asked for a token whenever the client needs one. Any
/// `Fn() -> impl Future<Output = Result<String, String>>` is one, whose `Err` means "no token
/// now" (retried, [`TokenError::Unavailable`]); to refuse for good, wrap a closure returning
/// `Result<String, TokenError>` in [`Refusable`].
pub trait TokenProvider: Send + Sync + 'static {
    /// Obtains a token (e.g. from the application's auth server).
    fn token(&self) -> TokenFuture;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    fn token(&self) -> TokenFuture {
        let answer = self();
        Box::pin(async move { answer.await.map_err(TokenError::Unavailable) })
    }
}

/// A token provider that can refuse for good: a closure returning
/// `impl Future<Output = Result<String, TokenError>>`.
///
/// ```
/// use tether_core::embed::{Refusable, TokenError};
/// let provider = Refusable(|| async {
///     Err::<String, _>(TokenError::Refused("the user signed out".into()))
/// });
/// # let _ = provider;
/// ```
pub struct Refusable<F>(pub F);

impl<F, Fut> TokenProvider for Refusable<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, TokenError>> + Send + 'static,
{
    fn token(&self) -> TokenFuture {
        Box::pin((self.0)())
    }
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// An API key (trusted servers only).
    ApiKey {
        /// Key name.
        name: String,
        /// Key secret.
        secret: String,
    },
    /// One fixed token; when the hub says it expired the client fails with
    /// `token_unavailable` (a refusal: nothing can renew it).
    Token(String),
    /// Tokens from the application, asked for on demand.
    Provider(Arc<dyn TokenProvider>),
}

/// What to do when the core asks for a token.
pub(crate) enum TokenAnswer {
    /// Answer now.
    Now(Result<String, TokenError>),
    /// Ask the provider; feed its answer back as a token command.
    Fetch(TokenFuture),
    /// Nothing to do.
    None,
}

impl Credentials {
    /// How the core authenticates with these credentials.
    pub fn auth(&self) -> Auth {
        match self {
            Credentials::ApiKey { name, secret } => Auth::ApiKey {
                name: name.clone(),
                secret: secret.clone(),
            },
            Credentials::Token(_) | Credentials::Provider(_) => Auth::Token,
        }
    }

    /// The policy: a fixed token is handed over on first use and kept until the hub says it
    /// expired (renewal requests are ignored: there is nothing to renew it with); a provider
    /// is asked every time; an API key never needs a token.
    pub(crate) fn answer(&self, reason: TokenReason) -> TokenAnswer {
        match (self, reason) {
            (Credentials::Token(token), TokenReason::Initial) => {
                TokenAnswer::Now(Ok(token.clone()))
            }
            (Credentials::Token(_), TokenReason::Expired) => {
                TokenAnswer::Now(Err(TokenError::Refused("the fixed token expired".into())))
            }
            (Credentials::Token(_), TokenReason::Renewal) | (Credentials::ApiKey { .. }, _) => {
                TokenAnswer::None
            }
            (Credentials::Provider(provider), _) => TokenAnswer::Fetch(provider.token()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ApiKey { name, .. } => write!(f, "ApiKey({name}, <redacted>)"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Provider(_) => f.write_str("Provider"),
        }
    }
}
