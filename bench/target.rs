//! The systems the bench drives (`--target`) and their clients' transport
//! (`--transport`).

use clap::ValueEnum;

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Switchboard: SSE `GET /v1/receive` + `POST /v1/send/<client>`.
    Switchboard,
    /// nginx + nchan: SSE `GET /sub/<id>` + `POST /pub/<id>`.
    Nchan,
    /// Redis pub/sub: `SUBSCRIBE <ch>` + `PUBLISH <ch> <msg>`.
    Redis,
    /// Mosquitto (MQTT 3.1.1): `CONNECT` + `SUBSCRIBE <topic>` at QoS 0 per
    /// receiver; senders `PUBLISH` at QoS 1, so each message gets a `PUBACK`
    /// (the counterpart of a 202 or of Redis's reply), and it is delivered at QoS 0.
    Mosquitto,
    /// Switchboard over WebSocket: `GET /v1/connect` upgraded, events as text
    /// frames, `send` commands answered `accepted` (what `--target switchboard
    /// --transport ws` selects).
    #[serde(rename = "switchboard-ws")]
    SwitchboardWs,
    /// nginx + nchan's WebSocket subscribers (`GET /ws/<id>` upgraded on a
    /// `nchan_subscriber websocket` location, each message one text frame);
    /// senders publish as for `nchan`, `POST /pub/<id>`.
    #[serde(rename = "nchan-ws")]
    NchanWs,
    /// Mosquitto's `websockets` listener: MQTT 3.1.1 in binary frames
    /// (subprotocol `mqtt`), the same CONNECT + SUBSCRIBE as `mosquitto`
    /// (`idle` only).
    #[serde(rename = "mosquitto-ws")]
    MosquittoWs,
}

/// The transport of a scenario's clients (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// Each system's own: SSE receive streams and HTTP sends (Switchboard, nchan),
    /// RESP (Redis), MQTT over TCP (Mosquitto).
    Sse,
    /// WebSocket: Switchboard's `/v1/connect`, nchan's WebSocket subscribers,
    /// Mosquitto's `websockets` listener (the `*-ws` targets).
    Ws,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Switchboard => "switchboard",
            Target::Nchan => "nchan",
            Target::Redis => "redis",
            Target::Mosquitto => "mosquitto",
            Target::SwitchboardWs => "switchboard-ws",
            Target::NchanWs => "nchan-ws",
            Target::MosquittoWs => "mosquitto-ws",
        }
    }

    /// Whether the clients speak WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(
            self,
            Target::SwitchboardWs | Target::NchanWs | Target::MosquittoWs
        )
    }

    /// Whether clients need tokens (`--secret`).
    pub fn is_switchboard(self) -> bool {
        matches!(self, Target::Switchboard | Target::SwitchboardWs)
    }

    /// The target `--transport` makes of this one: `ws` selects the
    /// WebSocket form of a system (Redis has none); `sse` keeps the target.
    pub fn with_transport(self, t: Transport) -> Result<Target, String> {
        Ok(match (t, self) {
            (Transport::Sse, t) => t,
            (Transport::Ws, Target::Switchboard | Target::SwitchboardWs) => Target::SwitchboardWs,
            (Transport::Ws, Target::Nchan | Target::NchanWs) => Target::NchanWs,
            (Transport::Ws, Target::Mosquitto | Target::MosquittoWs) => Target::MosquittoWs,
            (Transport::Ws, Target::Redis) => {
                return Err("--transport ws: Redis has no WebSocket transport".into())
            }
        })
    }

    /// `sse` or `ws`, for the JSON summaries.
    pub fn transport_name(self) -> &'static str {
        if self.is_ws() {
            "ws"
        } else {
            "sse"
        }
    }
}
