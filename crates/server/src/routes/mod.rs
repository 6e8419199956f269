//! HTTP handlers, one module per resource.

pub mod audit;
pub mod auth;
pub mod computer;
pub mod events;
pub mod messages;
pub mod operators;
pub mod sessions;
pub mod system;
pub mod vnc;

use raworc_api::{timestamp_from_millis, Message, Operator, Session};
use raworc_store::{MessageRow, OperatorRow, SessionRow};

pub(crate) fn session_json(s: SessionRow) -> Session {
    Session {
        id: s.id,
        name: s.name,
        state: s.state,
        busy: s.busy,
        owner: s.owner,
        instructions: s.instructions,
        setup: s.setup,
        secrets: s.secret_names,
        metadata: s.metadata,
        parent_id: s.parent_id,
        network: s.network,
        limits: s.limits,
        error: s.error,
        created_at: timestamp_from_millis(s.created_at),
        updated_at: timestamp_from_millis(s.updated_at),
    }
}

pub(crate) fn message_json(m: MessageRow) -> Message {
    let at = timestamp_from_millis(m.created_at);
    Message {
        id: m.id,
        session_id: m.session_id,
        seq: m.seq,
        role: m.role,
        content: m.content,
        created_at: at,
        timestamp: at,
        metadata: m.metadata,
    }
}

pub(crate) fn operator_json(o: OperatorRow) -> Operator {
    Operator {
        user: o.name,
        role: o.role,
        description: o.description,
        created_at: timestamp_from_millis(o.created_at),
        updated_at: timestamp_from_millis(o.updated_at),
        last_login: o.last_login_at.map(timestamp_from_millis),
    }
}
