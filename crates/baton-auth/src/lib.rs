//! # baton-auth: tokens, digests and sealed keys
//!
//! See the crate README for the contract. In short: [`issue_token`] makes a token and the
//! [`Credential`] to store; [`verify_token`] checks a presented token against a stored
//! credential in constant time; [`Sealer`] encrypts and decrypts signing keys with a key derived
//! from the cluster secret, which never enters the replicated state; [`SessionKeys`] makes and
//! checks the short-lived session tokens the HCX and Keystone logins hand out; [`replay`] keeps
//! signed parameters from being used by anyone but the client that first presented them.

#![cfg_attr(not(test), deny(unused_crate_dependencies))]
#![deny(missing_docs)]

pub mod hex;
pub mod replay;
mod seal;
mod session;
pub mod signed;
mod token;

pub use seal::{SealError, Sealer};
pub use session::{
    ParsedSession, SESSION_LIFETIME_SECS, SESSION_PREFIX, SessionKeys, parse_session,
};
pub use token::{
    ParsedToken, TOKEN_PREFIX, TokenError, credential_for, issue_token, parse_token, random_secret,
    verify_token,
};

pub use baton_core::Credential;
