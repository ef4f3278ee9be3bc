//! The `http2` and `h2_*` options as the core receives them (a leaf: the
//! config parser and the HTTP/2 module both read it).

/// HTTP/2 settings; present in the config only when `http2` is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE, per stream.
    pub initial_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE (16,384 to 16,777,215).
    pub max_frame_size: u32,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 WebSocket).
    pub enable_connect_protocol: bool,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// RST_STREAM frames a client may send at once, and per second after.
    pub rst_burst: u32,
    pub rst_rate: u32,
}

impl Default for H2Settings {
    /// The reference's defaults.
    fn default() -> Self {
        H2Settings {
            max_concurrent_streams: 100,
            initial_window_size: 65_535,
            max_frame_size: 16_384,
            enable_connect_protocol: true,
            max_header_list_size: 65_536,
            rst_burst: 1000,
            rst_rate: 33,
        }
    }
}

/// RFC 9113 6.5.2: the frame size a peer may announce.
pub const FRAME_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;
/// RFC 9113 6.9.2: the largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

impl H2Settings {
    /// Checks the values the protocol bounds, naming the option.
    pub fn check(&self) -> Result<(), String> {
        if !FRAME_SIZE_RANGE.contains(&self.max_frame_size) {
            return Err(format!(
                "h2_max_frame_size: must be between 16384 and 16777215, got {}",
                self.max_frame_size
            ));
        }
        if self.initial_window_size > MAX_WINDOW {
            return Err(format!(
                "h2_initial_window_size: must be at most 2147483647, got {}",
                self.initial_window_size
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err("h2_max_concurrent_streams: must be at least 1".into());
        }
        if self.rst_burst == 0 {
            return Err("h2_rst_rate_limit: burst must be at least 1".into());
        }
        Ok(())
    }
}
