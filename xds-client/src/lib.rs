//! ADS client for Envoy v3 xDS (state of the world and delta); not written yet, so it exports nothing.
