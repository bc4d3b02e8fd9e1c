package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"

	"github.com/google/uuid"

	"github.com/siot-io/siot/crdt"
	"github.com/siot-io/siot/record"
	"github.com/siot-io/siot/transport"
)

// Export returns every point the credentials may read, page by page, in
// export order (node, parent, type, key): with root, only the subtree of
// root (its points, its descendants' and the edges below it; a root the
// server does not have is ErrNotFound). Each page is a consistent
// snapshot; pages read while writes continue may mix states. An error is
// yielded once, last.
func (c *Client) Export(ctx context.Context, root uuid.UUID) iter.Seq2[[]Point, error] {
	return func(yield func([]Point, error) bool) {
		if root != uuid.Nil {
			// An empty export of a node the server does not have would look
			// like the backup of an empty subtree.
			if err := c.Known(ctx, root); err != nil {
				yield(nil, err)
				return
			}
		}
		req := transport.ExportRequest{Root: root}
		for {
			var page transport.ExportPage
			if err := c.Request(ctx, transport.NameExport, req, &page); err != nil {
				yield(nil, err)
				return
			}
			pts, err := crdt.DecodeBatch(page.Points, 0)
			if err != nil {
				yield(nil, &Error{Kind: ErrUnavailable, Msg: fmt.Sprintf("export page: %v", err), Err: err})
				return
			}
			if !yield(pts, nil) || !page.More {
				return
			}
			if len(page.Next) == 0 || bytes.Equal(page.Next, req.After) {
				yield(nil, &Error{Kind: ErrUnavailable, Msg: "export: the server sent a page without a new cursor"})
				return
			}
			req.After = page.Next
		}
	}
}

// ExportTo writes Export's records to w, one JSON object per line, each
// page in one Write, so an export cut off between pages ends on a whole
// record. It returns the records written.
func (c *Client) ExportTo(ctx context.Context, w io.Writer, root uuid.UUID) (int, error) {
	var buf []byte
	written := 0
	for pts, err := range c.Export(ctx, root) {
		if err != nil {
			return written, err
		}
		buf = buf[:0]
		for i := range pts {
			buf = record.Append(buf, &pts[i])
		}
		if _, err := w.Write(buf); err != nil {
			return written, fmt.Errorf("write after %d records: %w", written, err)
		}
		written += len(pts)
	}
	return written, nil
}
