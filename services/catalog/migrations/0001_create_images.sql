-- Images, their derived tag and search-term rows, and per-owner counts kept current by triggers.
-- Applied with search_path set to the catalog schema; function bodies name the schema explicitly.

CREATE TABLE images (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid text NOT NULL UNIQUE,
    owner_id text NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    filename text NOT NULL,
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    width integer NOT NULL,
    height integer NOT NULL,
    thumb_format text NOT NULL CHECK (thumb_format IN ('jpeg', 'png')),
    -- uploading: row reserved, bytes not yet durable, invisible to every read.
    status text NOT NULL CHECK (status IN ('uploading', 'pending', 'classified', 'failed')),
    status_reason text NOT NULL DEFAULT '',
    category text NOT NULL DEFAULT '',
    category_score real NOT NULL DEFAULT 0,
    -- [{"label", "class_id", "score", "rank"}], best first.
    labels jsonb NOT NULL DEFAULT '[]',
    -- [[tag, score]], best first, as the model produced them.
    model_tags jsonb NOT NULL DEFAULT '[]',
    manual_tags text[] NOT NULL DEFAULT '{}',
    -- Model tags the user removed; they stay hidden after reclassification.
    hidden_tags text[] NOT NULL DEFAULT '{}',
    model_name text NOT NULL DEFAULT '',
    model_version text NOT NULL DEFAULT '',
    -- "name/version" of the model a reclassification last tried and could not apply.
    reclassify_tried text NOT NULL DEFAULT '',
    attempts integer NOT NULL DEFAULT 0,
    -- For pending images: when the worker may try next. Also the lease of a claimed image.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    classified_at timestamptz,
    CONSTRAINT images_owner_sha256 UNIQUE (owner_id, sha256)
);

CREATE INDEX images_owner_recent ON images (owner_id, id DESC) WHERE status <> 'uploading';
CREATE INDEX images_owner_category ON images (owner_id, category, id DESC) WHERE status <> 'uploading';
CREATE INDEX images_sha256 ON images (sha256);
CREATE INDEX images_pending ON images (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX images_uploading ON images (updated_at) WHERE status = 'uploading';

-- One row per visible tag of an image (manual tags and unhidden model tags).
CREATE TABLE tags (
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    owner_id text NOT NULL,
    tag text NOT NULL,
    score real NOT NULL,
    manual boolean NOT NULL,
    PRIMARY KEY (image_id, tag)
);

CREATE INDEX tags_owner_tag ON tags (owner_id, tag, image_id DESC) INCLUDE (score);

-- Every word-suffix of every label and visible tag ("golden retriever", "retriever"), with the image's best weight
-- for it: the label score, or 2 for a manual tag so those rank first. Search walks the distinct terms under a
-- prefix and reads each term's rows already ordered by weight, so a page costs the same at any catalog size.
-- "C" collation makes prefix bounds plain code-point order.
CREATE TABLE search_terms (
    image_id bigint NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    owner_id text NOT NULL,
    term text COLLATE "C" NOT NULL,
    weight real NOT NULL,
    PRIMARY KEY (image_id, term)
);

CREATE INDEX search_terms_ranked ON search_terms (owner_id, term, weight DESC, image_id DESC);

CREATE TABLE category_counts (
    owner_id text NOT NULL,
    category text NOT NULL,
    images bigint NOT NULL,
    PRIMARY KEY (owner_id, category)
);

CREATE TABLE tag_counts (
    owner_id text NOT NULL,
    tag text NOT NULL,
    images bigint NOT NULL,
    PRIMARY KEY (owner_id, tag)
);

CREATE FUNCTION count_categories() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'classified' AND OLD.category <> '' THEN
        UPDATE catalog.category_counts SET images = images - 1
        WHERE owner_id = OLD.owner_id AND category = OLD.category;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status = 'classified' AND NEW.category <> '' THEN
        INSERT INTO catalog.category_counts AS c (owner_id, category, images) VALUES (NEW.owner_id, NEW.category, 1)
        ON CONFLICT (owner_id, category) DO UPDATE SET images = c.images + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER images_count_categories
    AFTER INSERT OR DELETE OR UPDATE OF status, category ON images
    FOR EACH ROW EXECUTE FUNCTION count_categories();

CREATE FUNCTION count_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE catalog.tag_counts SET images = images - 1 WHERE owner_id = OLD.owner_id AND tag = OLD.tag;
    ELSE
        INSERT INTO catalog.tag_counts AS c (owner_id, tag, images) VALUES (NEW.owner_id, NEW.tag, 1)
        ON CONFLICT (owner_id, tag) DO UPDATE SET images = c.images + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tags_count AFTER INSERT OR DELETE ON tags FOR EACH ROW EXECUTE FUNCTION count_tags();
