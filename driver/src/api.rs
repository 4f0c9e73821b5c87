//! The types an application names when it uses an adapter, re-exported by every adapter
//! (`pub use tether_driver::api::*;`) so applications need not depend on tether-core
//! themselves, and so every adapter offers the same names.

pub use tether_core::client::{ClientConfig, ConnectionState, HistoryPage, NewMessage};
pub use tether_core::embed::{
    ChannelEvent, ConnectionStateChange, ConnectionStats, Credentials, Error, Refusable,
    TokenError, TokenFuture, TokenProvider,
};
pub use tether_core::server::auth::{Revocation, RevocationTarget};
pub use tether_core::server::{
    ApiKey, Capabilities, ChannelSummary, Claims, HubConfig, HubStats, HubTotals, Operation,
    PublishedMessage, mint_token,
};
pub use tether_core::wire::{
    ChannelMessage, ChannelName, ClientId, Continuity, Direction, HistoryBound, HistoryQuery,
    Message, MessageId, Position,
};
pub use tether_core::{ErrorCode, ErrorInfo};
