//! Skiff's ADS (xDS) client for Envoy v3: the protocol state machine, sans IO, for both the
//! state-of-the-world and the incremental variant.
//!
//! The clients ([`SotwClient`], [`DeltaClient`]) take responses and return the requests to send;
//! they never touch a socket, so a transport (gRPC, or a test) drives them. Decoding and
//! validating resources is the user's, through a [`Handler`]: the library knows no proxy types.
//!
//! ```
//! use xds_client::{type_url, Handler, NodeIdentity, Rejected, SotwClient, Update, Watch};
//!
//! struct Config;
//! impl Handler for Config {
//!     fn apply(&mut self, _type_url: &str, _update: Update<'_>) -> Vec<Rejected> {
//!         Vec::new() // decode, validate and apply; return what was refused
//!     }
//! }
//!
//! let node = NodeIdentity::new([10, 0, 0, 7].into(), "web-0", "default").to_node();
//! let mut client = SotwClient::new(
//!     node,
//!     [
//!         Watch::wildcard(type_url::CLUSTER),
//!         Watch::named(type_url::ENDPOINT, [] as [&str; 0]),
//!         Watch::wildcard(type_url::LISTENER),
//!         Watch::named(type_url::ROUTE, [] as [&str; 0]),
//!     ],
//! );
//! let initial = client.start_stream(); // send these, then feed responses to handle_response
//! assert_eq!(initial.len(), 2); // CDS and LDS; RDS and EDS wait for names
//! ```

#[cfg(feature = "ca")]
pub mod ca;
#[cfg(feature = "server")]
pub mod ca_server;
pub mod delta;
mod envelope;
pub mod handler;
pub mod metrics;
pub mod nack;
pub mod node;
#[cfg(feature = "schema")]
pub mod schema;
#[cfg(feature = "server")]
pub mod server;
pub mod sotw;
pub mod state;
mod stream;
#[cfg(feature = "transport")]
pub mod transport;
pub mod type_url;

pub use delta::DeltaClient;
pub use envelope::InvalidResponse;
pub use handler::{Handler, InvalidPayload, Rejected, Resource, Update};
pub use metrics::{Metrics, TypeMetrics};
pub use node::NodeIdentity;
pub use sotw::SotwClient;
pub use state::{Interest, InvalidWatch, TypeState, Watch};
pub use stream::UnexpectedResponse;

#[cfg(test)]
mod test_support;
