-- Search with everyday words: the vocabulary version each image's model tags were derived with (a new version
-- re-tags old images from their stored labels), when and with what a photo was taken (EXIF), and per-user settings.

ALTER TABLE images
    ADD COLUMN vocabulary_version text NOT NULL DEFAULT '',
    ADD COLUMN taken_at timestamptz,
    ADD COLUMN camera_make text NOT NULL DEFAULT '',
    ADD COLUMN camera_model text NOT NULL DEFAULT '';

-- "When taken" is the EXIF date, or the upload time when the file has none, so every image has one.
CREATE INDEX images_owner_taken ON images (owner_id, (coalesce(taken_at, created_at)) DESC, id DESC)
    WHERE status <> 'uploading';

-- Counts per category above a score floor read this instead of every row.
CREATE INDEX images_owner_category_score ON images (owner_id, category, category_score)
    WHERE status = 'classified';

-- Lists by tag read a term's images newest first (search reads them by weight, through search_terms_ranked).
CREATE INDEX search_terms_recent ON search_terms (owner_id, term, image_id DESC) INCLUDE (weight);

CREATE TABLE user_settings (
    owner_id text PRIMARY KEY,
    -- Matches below this are left out of search and counts unless a request sets min_score.
    min_score double precision NOT NULL CHECK (min_score >= 0 AND min_score <= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Counts at the default min_score, kept current by triggers like those of 0001, so /v1/tags and /v1/categories
-- answer from a small table for everyone on the default; other thresholds count from the index.
-- count_threshold() must equal DEFAULT_MIN_SCORE in services/catalog/terms.py (a test compares them).
CREATE FUNCTION count_threshold() RETURNS double precision LANGUAGE sql IMMUTABLE AS 'SELECT 0.12::double precision';

CREATE TABLE term_counts (
    owner_id text NOT NULL,
    term text COLLATE "C" NOT NULL,
    images bigint NOT NULL,
    PRIMARY KEY (owner_id, term)
);

CREATE FUNCTION count_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.weight >= catalog.count_threshold() THEN
            UPDATE catalog.term_counts SET images = images - 1 WHERE owner_id = OLD.owner_id AND term = OLD.term;
        END IF;
    ELSIF NEW.weight >= catalog.count_threshold() THEN
        INSERT INTO catalog.term_counts AS c (owner_id, term, images) VALUES (NEW.owner_id, NEW.term, 1)
        ON CONFLICT (owner_id, term) DO UPDATE SET images = c.images + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER search_terms_count AFTER INSERT OR DELETE ON search_terms FOR EACH ROW EXECUTE FUNCTION count_terms();

INSERT INTO term_counts (owner_id, term, images)
SELECT owner_id, term, count(*) FROM search_terms WHERE weight >= count_threshold() GROUP BY owner_id, term;

-- Categories now count only images whose top label reaches the default threshold, as search does (and, as since
-- 0003, none in the trash).
CREATE OR REPLACE FUNCTION count_categories() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'classified' AND OLD.category <> ''
            AND OLD.category_score >= catalog.count_threshold() AND OLD.deleted_at IS NULL THEN
        UPDATE catalog.category_counts SET images = images - 1
        WHERE owner_id = OLD.owner_id AND category = OLD.category;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status = 'classified' AND NEW.category <> ''
            AND NEW.category_score >= catalog.count_threshold() AND NEW.deleted_at IS NULL THEN
        INSERT INTO catalog.category_counts AS c (owner_id, category, images) VALUES (NEW.owner_id, NEW.category, 1)
        ON CONFLICT (owner_id, category) DO UPDATE SET images = c.images + 1;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER images_count_categories ON images;
CREATE TRIGGER images_count_categories
    AFTER INSERT OR DELETE OR UPDATE OF status, category, category_score, deleted_at ON images
    FOR EACH ROW EXECUTE FUNCTION count_categories();

TRUNCATE category_counts;
INSERT INTO category_counts (owner_id, category, images)
SELECT owner_id, category, count(*) FROM images
WHERE status = 'classified' AND category <> '' AND category_score >= count_threshold() AND deleted_at IS NULL
GROUP BY owner_id, category;
