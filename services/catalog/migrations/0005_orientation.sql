-- The EXIF orientation of the stored bytes (1..8); width and height are the upright size from now on.
-- 0 marks images stored before it was recorded: their width and height are the stored size.
ALTER TABLE images ADD COLUMN orientation smallint NOT NULL DEFAULT 0 CHECK (orientation BETWEEN 0 AND 8);
