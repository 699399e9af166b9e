package maxcompute

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/aliyun-odps-go-sdk/odps"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/datatype"
	"github.com/aliyun/aliyun-odps-go-sdk/odps/tableschema"

	"github.com/shardsync/shardsync/change"
	"github.com/shardsync/shardsync/twopc"
)

// ClaimTablePrefix starts the name of the table, beside each target in
// its project (and schema), whose comment records which ledger writes the
// target: shardsync_claim_<target table>. A claim is a table rather than a
// row because MaxCompute creates a table at most once: of two jobs that
// create the same claim table at the same moment, one gets "table already
// exists", and a claim is handed over by renaming the old claim table
// away, which also succeeds for one of them only. The table itself holds
// no rows.
const ClaimTablePrefix = "shardsync_claim_"

var _ twopc.Claimer = (*Sink)(nil)

// claim is what a claim table's comment records.
type claim struct {
	ledgerID  string
	holder    string
	claimedAt string
}

const claimCommentPrefix = "shardsync claim: "

var plainName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// claimTable names the claim table of target table name; a name that is
// long or not plain letters, digits and underscores is replaced by a hash.
func claimTable(name string) string {
	if plainName.MatchString(name) && len(ClaimTablePrefix)+len(name) <= 100 {
		return ClaimTablePrefix + name
	}
	sum := sha256.Sum256([]byte(strings.ToLower(name)))
	return ClaimTablePrefix + hex.EncodeToString(sum[:12])
}

// replacedClaimTable is where ledger renames the claim of name while it
// hands the claim over to itself.
func replacedClaimTable(name, ledger string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(name) + "\x00" + ledger))
	return "shardsync_replaced_claim_" + hex.EncodeToString(sum[:12])
}

func (c claim) comment() string {
	return claimCommentPrefix + "ledger=" + c.ledgerID + "; claimed_at=" + c.claimedAt + "; holder=" + c.holder
}

func parseClaim(comment string) (claim, bool) {
	rest, ok := strings.CutPrefix(comment, claimCommentPrefix)
	if !ok {
		return claim{}, false
	}
	var c claim
	for _, part := range strings.SplitN(rest, "; ", 3) {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "ledger":
			c.ledgerID = v
		case "claimed_at":
			c.claimedAt = v
		case "holder":
			c.holder = v
		}
	}
	return c, c.ledgerID != ""
}

// sanitizeHolder keeps a holder description safe inside a quoted comment
// and inside the "; "-separated claim.
func sanitizeHolder(h string) string {
	h = strings.Map(func(r rune) rune {
		if r == '\\' || r == ';' || r == '\'' || r < ' ' {
			return ' '
		}
		return r
	}, h)
	if len(h) > 500 {
		h = strings.ToValidUTF8(h[:500], "")
	}
	return h
}

// ClaimTargets implements twopc.Claimer: for each target it reads the claim
// table beside it and records the owner's ledger where the target is free
// (missing and unclaimed, empty and unclaimed, or holding rows of a pre-id
// ledger that o.Adopt says is this one). A claim by another ledger, even of
// an empty or missing target (that job may be running and not have created
// the table or loaded its first rows yet), or rows no ledger claimed, fail
// with one error wrapping twopc.ErrForeignTarget that lists every such
// target and the choices. With o.Recreate and o.Fresh such a target is
// re-created when it holds rows (dropped, with all its partitions, and
// created again with the same columns, partition columns, primary key,
// transactional and write.bucket.num properties, comment and lifecycle),
// and claimed. Whether a target holds rows is asked with select count(*)
// (with odps.sql.allow.fullscan=true, so a partitioned table is counted
// whole).
//
// Failure: an error before a drop leaves the targets untouched; an error
// between the drop and the create leaves the target missing, and the next
// start creates it from the source schema (with --recreate-target it is
// claimed again); an error after the create leaves it empty and possibly
// unclaimed, and the next start with the flag re-creates and claims it.
func (s *Sink) ClaimTargets(ctx context.Context, targets []change.TableID, o twopc.Owner) error {
	if o.LedgerID == "" {
		return errors.New("maxcompute: claiming targets needs the ledger id")
	}
	var foreign []string
	seen := map[change.TableID]bool{}
	for _, id := range targets {
		if seen[id] {
			continue
		}
		seen[id] = true
		why, err := s.claimTarget(ctx, id, o)
		if err != nil {
			return fmt.Errorf("maxcompute: checking which ledger writes target %s: %w", id, err)
		}
		if why != "" {
			foreign = append(foreign, why)
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	choices := "Restore the ledger file that wrote them (--ledger) and start again; or start with --recreate-target " +
		"and a new ledger to re-create these tables (dropped with their partitions and created again, empty, with the same columns, partition columns, primary key and properties) " +
		"and snapshot them again; if another job is running with this target, stop it or route this job to another target"
	if o.Recreate && !o.Fresh {
		choices = "--recreate-target was given, but ledger " + o.LedgerID + " has already committed data, so the sources " +
			"would not be read again from the beginning: start with a new --ledger file and --recreate-target, or restore " +
			"the ledger file that wrote these targets"
	}
	return fmt.Errorf("maxcompute project %s, ledger %s: %s. Loading on would snapshot over these rows and keep the rows deleted at the source meanwhile. %s: %w",
		s.cfg.Project, o.LedgerID, strings.Join(foreign, "; "), choices, twopc.ErrForeignTarget)
}

// claimTarget settles one target; why is non-empty when it is foreign.
func (s *Sink) claimTarget(ctx context.Context, id change.TableID, o twopc.Owner) (why string, err error) {
	name := tableName(id)
	if _, err := quoteIdent(name); err != nil {
		return "", err
	}
	schema, err := s.tableSchema(ctx, id)
	if err != nil {
		return "", err
	}
	if err := s.ensureSchema(ctx, schema); err != nil {
		return "", err
	}
	disp := s.displayName(schema, name)
	log := s.log.With("target", id.String(), "table", disp)
	// A member of a split assignment keeps its claim apart from the
	// other members' (claimTable hashes a name that is not plain).
	cname := name
	if o.Share != "" {
		cname = name + " " + o.Share
	}
	cur, found, err := s.readClaim(ctx, schema, cname)
	if err != nil {
		return "", err
	}
	if found && cur.ledgerID == o.LedgerID {
		return "", nil
	}
	tbl, exists, err := s.loadTable(ctx, schema, name)
	if err != nil {
		return "", err
	}
	hasRows := false
	if exists {
		if hasRows, err = s.hasRows(ctx, schema, name); err != nil {
			return "", err
		}
	}
	recreate := o.Recreate && o.Fresh
	switch {
	case found && !hasRows && !recreate:
		// Missing or empty but claimed by another ledger: that job may
		// be running and not have created the table or loaded its first
		// rows yet; two jobs loading one target would each snapshot over
		// the other.
		state := "is empty"
		if !exists {
			state = "does not exist"
		}
		return fmt.Sprintf("target %s (%s) %s but is claimed by ledger %s (claimed %s by %s), which may be a job still running that has not loaded rows yet",
			id, disp, state, cur.ledgerID, cur.claimedAt, cur.holder), nil
	case !hasRows:
		// Missing or empty, and unclaimed (or the operator asked to take
		// it over): nothing of anyone's can be overwritten.
	case !found && o.Share != "":
		log.Info("maxcompute target holds rows and no claim of this label prefix; joining it as one more job of a split assignment (its rows are the other jobs')",
			"ledger", o.LedgerID, "label_prefix", o.Share)
	case !found && o.Adopt:
		log.Info("maxcompute target holds rows and no ledger claim; adopting it for this ledger, which was written by a shardsync from before ledger ids",
			"ledger", o.LedgerID)
	case recreate:
		if err := s.recreateTable(ctx, schema, tbl); err != nil {
			return "", err
		}
		log.Warn("maxcompute target re-created empty (--recreate-target): it held rows of another ledger and is snapshotted again",
			"previous_ledger", cur.ledgerID, "ledger", o.LedgerID)
	case found:
		return fmt.Sprintf("target %s (%s) holds rows written under ledger %s (claimed %s by %s)", id, disp, cur.ledgerID, cur.claimedAt, cur.holder), nil
	default:
		return fmt.Sprintf("target %s (%s) holds rows that no ledger claimed (an earlier job whose ledger was lost, or another writer)", id, disp), nil
	}
	next := claim{ledgerID: o.LedgerID, holder: sanitizeHolder(o.Holder), claimedAt: time.Now().UTC().Format(time.DateTime)}
	won, err := s.writeClaim(ctx, schema, cname, found, next)
	if err != nil {
		return "", err
	}
	if !won {
		other, seen, err := s.readClaim(ctx, schema, cname)
		if err != nil {
			return "", err
		}
		who := "another job (its claim is not visible yet)"
		if seen {
			who = fmt.Sprintf("ledger %s (%s)", other.ledgerID, other.holder)
		}
		return fmt.Sprintf("target %s (%s) was claimed at the same moment by %s", id, disp, who), nil
	}
	log.Info("maxcompute target claimed for this ledger", "ledger", o.LedgerID, "claim_table", s.displayName(schema, claimTable(cname)))
	return "", nil
}

// readClaim reads the claim of target table name from its claim table's
// comment.
func (s *Sink) readClaim(ctx context.Context, schema, name string) (claim, bool, error) {
	ct := claimTable(name)
	tbl, exists, err := s.loadTable(ctx, schema, ct)
	if err != nil || !exists {
		return claim{}, false, err
	}
	c, ok := parseClaim(tbl.Comment())
	if !ok {
		return claim{}, false, fmt.Errorf("table %s is not a shardsync claim (its comment is %q): drop or rename it",
			s.displayName(schema, ct), tbl.Comment())
	}
	return c, true, nil
}

// writeClaim records c as the claim of name. When replace is set, the
// current claim table is first renamed away, which succeeds for one job
// only. won is false when another job got the claim first.
func (s *Sink) writeClaim(ctx context.Context, schema, name string, replace bool, c claim) (won bool, err error) {
	ct := claimTable(name)
	if replace {
		old := replacedClaimTable(name, c.ledgerID)
		if err := s.execSQL(ctx, schema, fmt.Sprintf("drop table if exists %s;", s.fullName(schema, old))); err != nil {
			return false, err
		}
		if err := s.execSQL(ctx, schema, fmt.Sprintf("alter table %s rename to `%s`;", s.fullName(schema, ct), old)); err != nil {
			if _, still, rerr := s.loadTable(ctx, schema, ct); rerr == nil && !still {
				return false, nil // renamed away by another job
			}
			return false, fmt.Errorf("handing over the claim: %w", err)
		}
		defer func() {
			if err == nil {
				_ = s.execSQL(ctx, schema, fmt.Sprintf("drop table if exists %s;", s.fullName(schema, old)))
			}
		}()
	}
	ts := tableschema.NewSchemaBuilder().Name(ct).Comment(c.comment()).
		Columns(tableschema.Column{Name: "ledger_id", Type: datatype.StringType}).Build()
	sql, err := ts.ToSQLString(s.cfg.Project, schema, false)
	if err != nil {
		return false, fmt.Errorf("building the claim table %s: %w", ct, err)
	}
	if cerr := s.execSQL(ctx, schema, sql); cerr != nil {
		// Another job's create won, or ours did and its reply was lost.
		got, seen, err := s.readClaim(ctx, schema, name)
		switch {
		case err != nil:
			return false, fmt.Errorf("%w (and reading the claim again: %w)", cerr, err)
		case !seen:
			return false, cerr
		case got.ledgerID == c.ledgerID && got.claimedAt == c.claimedAt:
			return true, nil
		}
		return false, nil
	}
	return true, nil
}

// hasRows reports whether table name holds committed rows, in any
// partition.
func (s *Sink) hasRows(ctx context.Context, schema, name string) (bool, error) {
	q := fmt.Sprintf("select count(*) from %s;", s.fullName(schema, name))
	hints := ddlHints(schema)
	hints["odps.sql.allow.fullscan"] = "true"
	rows, err := call(ctx, s.cfg.CommitTimeout, func() ([][]string, error) {
		task := odps.NewSqlTask("shardsync_claim_count", q, hints)
		ins, err := task.Run(s.odps, s.cfg.Project)
		if err != nil {
			return nil, err
		}
		if err := ins.WaitForSuccess(); err != nil {
			return nil, err
		}
		r, err := task.GetSelectResultAsCsv(ins, false)
		if err != nil {
			return nil, err
		}
		return r.ReadAll()
	})
	if err != nil {
		return false, fmt.Errorf("counting the rows of %s (%q): %s", s.displayName(schema, name), q, firstLine(describe(err)))
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return false, fmt.Errorf("counting the rows of %s: unexpected result %q", s.displayName(schema, name), rows)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(rows[0][0]), 10, 64)
	if err != nil {
		return false, fmt.Errorf("counting the rows of %s: count %q is not a number", s.displayName(schema, name), rows[0][0])
	}
	return n > 0, nil
}

// recreateTable drops tbl, with every partition, and creates it again,
// empty, from its own definition: columns, partition columns, primary key,
// transactional and write.bucket.num, comment and lifecycle.
func (s *Sink) recreateTable(ctx context.Context, schema string, tbl *odps.Table) error {
	sc := tbl.Schema()
	b := tableschema.NewSchemaBuilder().Name(tbl.Name()).Comment(sc.Comment).Columns(sc.Columns...)
	if len(sc.PartitionColumns) > 0 {
		b = b.PartitionColumns(sc.PartitionColumns...)
	}
	props := map[string]string{}
	if pk := tbl.PrimaryKeys(); len(pk) > 0 {
		b = b.PrimaryKeys(pk)
		if n := tbl.ClusterInfo().BucketNum; n > 0 {
			props["write.bucket.num"] = strconv.Itoa(n)
		}
	}
	if tbl.Transactional() {
		props["transactional"] = "true"
	}
	if len(props) > 0 {
		b = b.TblProperties(props)
	}
	if sc.Lifecycle > 0 {
		b = b.Lifecycle(sc.Lifecycle)
	}
	def := b.Build()
	create, err := def.ToSQLString(s.cfg.Project, schema, false)
	if err != nil {
		return fmt.Errorf("building CREATE TABLE to re-create %s: %w", s.displayName(schema, tbl.Name()), err)
	}
	if err := s.execSQL(ctx, schema, fmt.Sprintf("drop table %s;", s.fullName(schema, tbl.Name()))); err != nil {
		return fmt.Errorf("dropping %s for --recreate-target: %w", s.displayName(schema, tbl.Name()), err)
	}
	if err := s.execSQL(ctx, schema, create); err != nil {
		return fmt.Errorf("re-creating %s for --recreate-target (it was dropped; the next start creates it from the source schema): %w", s.displayName(schema, tbl.Name()), err)
	}
	return nil
}
