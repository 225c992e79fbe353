//! The `error_detail` of a NACK: which resources were rejected and why.
//!
//! Shapes, for the operator reading istiod's `ACK ERROR` log line:
//! - some resources rejected:
//!   `envoy.config.listener.v3.Listener rejected "l1": no address; "l2": unknown filter`
//! - the whole response rejected:
//!   `envoy.config.listener.v3.Listener response rejected: resource "l1" appears more than once`

use envoy_types::pb::google::rpc::Status;

use crate::{envelope::InvalidResponse, handler::Rejected, type_url::short_name};

/// The `google.rpc.Code` of a NACK's `error_detail`: `INTERNAL` (13).
///
/// This is what Envoy sends, in both variants: `GrpcMuxImpl::onDiscoveryResponse` (state of the
/// world) and `DeltaSubscriptionState::handleBadResponse` (delta) set
/// `Grpc::Status::WellKnownGrpcStatus::Internal`, which istiod logs as `Internal:Error
/// adding/updating listener(s) ...`. (Envoy's LDS code builds an `InvalidArgumentError`, but the
/// mux replaces its code when it fills `error_detail`.) Servers detect a NACK by the presence of
/// `error_detail`, not by its code.
pub const NACK_CODE: i32 = 13;

/// The longest `error_detail.message` the client sends, in bytes, as Envoy's
/// `Config::Utility::truncateGrpcStatusMessage` (4096 bytes, then `...(truncated)`).
pub const MAX_NACK_MESSAGE: usize = 4096;

const TRUNCATED: &str = "...(truncated)";

/// The `error_detail` for a response some of whose resources the handler rejected.
pub(crate) fn rejected_resources(type_url: &str, rejected: &[Rejected]) -> Status {
    let list = rejected
        .iter()
        .map(Rejected::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    status(format!("{} rejected {list}", short_name(type_url)))
}

/// The `error_detail` for a response rejected as a whole.
pub(crate) fn invalid_response(type_url: &str, error: &InvalidResponse) -> Status {
    status(format!(
        "{} response rejected: {error}",
        short_name(type_url)
    ))
}

fn status(mut message: String) -> Status {
    if message.len() > MAX_NACK_MESSAGE {
        let mut end = MAX_NACK_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(TRUNCATED);
    }
    Status {
        code: NACK_CODE,
        message,
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::type_url::LISTENER;

    #[test]
    fn nack_message_names_each_rejected_resource_and_reason() {
        let status = rejected_resources(
            LISTENER,
            &[
                Rejected::new("l1", "no address"),
                Rejected::new("l2", "unknown filter"),
            ],
        );
        assert_eq!(status.code, 13);
        assert_eq!(
            status.message,
            r#"envoy.config.listener.v3.Listener rejected "l1": no address; "l2": unknown filter"#
        );
    }

    #[test]
    fn long_nack_message_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(MAX_NACK_MESSAGE);
        let status = rejected_resources(LISTENER, &[Rejected::new("l1", reason)]);
        assert!(status.message.ends_with(TRUNCATED));
        assert!(status.message.len() <= MAX_NACK_MESSAGE + TRUNCATED.len());
        assert!(status.message.len() > MAX_NACK_MESSAGE - 2);
    }
}
