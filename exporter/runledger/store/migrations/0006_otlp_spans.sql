-- OTLP in (POST /v1/traces): every accepted span is stored in trace_spans, the run page's
-- source of spans when no Tempo is configured.
--
-- kind and status are the span's (OTLP enum names: 'client', 'internal', ...; 'unset', 'ok',
-- 'error'); service is the resource's service.name. unpriced marks a GenAI span whose model
-- has no price: it was stored with cost 0 and counted, never costed silently; the partial
-- index finds those spans for an operator without scanning the table. No other index: the
-- baseline's (run_id, started_at and the key) serve the run page and retention, and each
-- one more would cost every export.
ALTER TABLE trace_spans
    ADD COLUMN kind        text,
    ADD COLUMN status      text,
    ADD COLUMN service     text,
    ADD COLUMN unpriced    boolean NOT NULL DEFAULT false,
    ADD COLUMN received_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX trace_spans_unpriced ON trace_spans (tenant_id, started_at) WHERE unpriced;
