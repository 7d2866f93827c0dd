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

CREATE TABLE user_settings (
    owner_id text PRIMARY KEY,
    -- Matches below this are left out of search and counts unless a request sets min_score.
    min_score real NOT NULL CHECK (min_score >= 0 AND min_score <= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);
