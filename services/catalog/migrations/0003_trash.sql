-- Trash: a deleted image keeps its row and bytes, hidden from every read, until it is restored or the sweeper
-- purges it after the retention period. Trashed images are not counted in categories; their tag and search rows
-- are removed while they are in the trash (and rebuilt on restore), so tag counts and search skip them too.

ALTER TABLE images ADD COLUMN deleted_at timestamptz;

CREATE INDEX images_owner_trash ON images (owner_id, deleted_at DESC, id DESC) WHERE deleted_at IS NOT NULL;
CREATE INDEX images_trash_expiry ON images (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE OR REPLACE FUNCTION count_categories() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status = 'classified' AND OLD.category <> ''
            AND OLD.deleted_at IS NULL THEN
        UPDATE catalog.category_counts SET images = images - 1
        WHERE owner_id = OLD.owner_id AND category = OLD.category;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') AND NEW.status = 'classified' AND NEW.category <> ''
            AND NEW.deleted_at IS NULL THEN
        INSERT INTO catalog.category_counts AS c (owner_id, category, images) VALUES (NEW.owner_id, NEW.category, 1)
        ON CONFLICT (owner_id, category) DO UPDATE SET images = c.images + 1;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER images_count_categories ON images;
CREATE TRIGGER images_count_categories
    AFTER INSERT OR DELETE OR UPDATE OF status, category, deleted_at ON images
    FOR EACH ROW EXECUTE FUNCTION count_categories();
