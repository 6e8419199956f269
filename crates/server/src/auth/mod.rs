//! Who is calling: tokens, passwords, the principal extractor, login limits.

pub mod jwt;
pub mod password;
pub mod principal;
pub mod ratelimit;

pub use principal::Principal;
