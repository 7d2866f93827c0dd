-- What each owner's images use, kept current by a trigger, so an upload checks its owner's quota by locking one row.
-- Rows of uploads in progress count: concurrent uploads by one owner cannot exceed the quota together.

CREATE TABLE storage_usage (
    owner_id text PRIMARY KEY,
    bytes bigint NOT NULL DEFAULT 0,
    images bigint NOT NULL DEFAULT 0
);

INSERT INTO storage_usage (owner_id, bytes, images)
SELECT owner_id, sum(size_bytes), count(*) FROM images GROUP BY owner_id;

CREATE FUNCTION count_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE catalog.storage_usage SET bytes = bytes - OLD.size_bytes, images = images - 1
        WHERE owner_id = OLD.owner_id;
    ELSE
        INSERT INTO catalog.storage_usage AS u (owner_id, bytes, images) VALUES (NEW.owner_id, NEW.size_bytes, 1)
        ON CONFLICT (owner_id) DO UPDATE SET bytes = u.bytes + excluded.bytes, images = u.images + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER images_count_usage AFTER INSERT OR DELETE ON images FOR EACH ROW EXECUTE FUNCTION count_usage();
