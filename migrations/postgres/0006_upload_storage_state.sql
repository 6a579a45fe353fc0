-- The storage backend's state of an upload in progress (on S3: the
-- multipart upload, its parts' ETags and the tail object's name, as JSON),
-- written in the same conditional update as the upload's size and hash
-- state. NULL on local disk.
ALTER TABLE uploads ADD COLUMN storage_state TEXT COLLATE "C";
