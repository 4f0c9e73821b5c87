//! The types an application names when it uses an adapter, re-exported by every adapter
//! (`pub use tether_driver::api::*;`) so applications need not depend on tether-core
//! themselves, and so every adapter offers the same names.

pub use tether_core::client::{ClientConfig, ConnectionState, HistoryPage, NewMessage};
pub use tether_core::embed::{
    ChannelEvent, ConnectionStateChange, ConnectionStats, Credentials, Error, Hooks, Refusable,
    TokenError, TokenFuture, TokenProvider,
};
pub use tether_core::server::auth::{Revocation, RevocationTarget};
pub use tether_core::server::{
    ApiKey, Capabilities, ChannelOptions, ChannelSummary, Claims, HookAnswer, HookRequest,
    HubConfig, HubStats, HubTotals, Namespace, Operation, PublishedMessage, Publishers, mint_token,
};
pub use tether_core::wire::{
    ChannelMessage, ChannelName, ClientId, Continuity, Direction, HistoryBound, HistoryQuery,
    Message, MessageId, Position,
};
pub use tether_core::{ErrorCode, ErrorInfo};
