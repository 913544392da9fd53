-- The table `related build --source postgresql+psycopg://...` and `related sync` read by default
-- (another schema: map it with `--query`). The CMS writes it; `updated_at` must change on every
-- edit (the sync watermark), and a deleted article stays as a row with deleted = true until the
-- next sync has seen it.
CREATE TABLE IF NOT EXISTS articles (
    id          text PRIMARY KEY,
    title       text,
    body        text,
    published   timestamptz,
    lang        text,
    category    text,
    url         text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted     boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS articles_updated_at ON articles (updated_at);
