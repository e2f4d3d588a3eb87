package workqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Batch membership (D-size9). The tasks of a batch are listed under
// batch/<batch>/, many to a key: a submit transaction that creates tasks
// of a batch writes one member key for them, named by the order of the
// first (batch/<batch>/<order in 19 digits>), whose value lists their ids
// sorted and prefix-compressed (~3 bytes an id when ids count up, as
// corpus ids do) instead of one key of ~95 bytes per task. The orders of
// one Submit's tasks count up from one base (Submit), and a transaction
// holds fewer than chunkSpan tasks, so every task of a member key has an
// order in [its key's order, + chunkSpan): retention finds a task's key
// from its spec's order with one short range read (findMember), removes
// the id from it, and removes the key with its last id. Member keys are
// created with a create-revision compare, so two submits never write one
// key.
//
// Before D-size9 a batch had one key per task, batch/<batch>/<id> with an
// empty value. Such keys are still read (an empty value lists the one id
// its key ends with) and removed by retention.

// chunkSpan bounds the orders in one member key: its tasks' orders are
// in [order, order+chunkSpan). Submit puts fewer tasks than that in a
// transaction.
const chunkSpan = 1024

// membersFormat starts every member list.
const membersFormat = '1'

func batchPrefix(batch string) string { return prefixBatch + batch + "/" }

// memberKey is the member key of batch named by order.
func memberKey(batch string, order int64) string {
	return fmt.Sprintf("%s%019d", batchPrefix(batch), order)
}

// formerMemberKey is the member key of one task before D-size9.
func formerMemberKey(batch, id string) string { return batchPrefix(batch) + id }

// encodeMembers returns the value listing ids: membersFormat, then per id
// in sorted order the length of the prefix it shares with the id before
// it, the length of the rest and the rest, each length a byte (ids are at
// most MaxIDLen bytes).
func encodeMembers(ids []string) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	var b strings.Builder
	b.WriteByte(membersFormat)
	prev := ""
	for _, id := range ids {
		n := 0
		for n < len(prev) && n < len(id) && prev[n] == id[n] {
			n++
		}
		b.WriteByte(byte(n))
		b.WriteByte(byte(len(id) - n))
		b.WriteString(id[n:])
		prev = id
	}
	return b.String()
}

var errBadMembers = errors.New("malformed member list")

// decodeMembers returns the ids a member list names, sorted.
func decodeMembers(val []byte) ([]string, error) {
	if len(val) == 0 || val[0] != membersFormat {
		return nil, errBadMembers
	}
	val = val[1:]
	var ids []string
	prev := ""
	for len(val) > 0 {
		if len(val) < 2 {
			return nil, errBadMembers
		}
		shared, rest := int(val[0]), int(val[1])
		val = val[2:]
		if shared > len(prev) || rest > len(val) || shared+rest == 0 {
			return nil, errBadMembers
		}
		id := prev[:shared] + string(val[:rest])
		val = val[rest:]
		if id <= prev {
			return nil, errBadMembers // not sorted, or repeated
		}
		ids = append(ids, id)
		prev = id
	}
	return ids, nil
}

// memberIDs returns the ids a key under batch/<batch>/ lists: the key's
// last segment for a key of the former layout (empty value), else its
// member list.
func memberIDs(suffix string, val []byte) ([]string, error) {
	if len(val) == 0 {
		if ValidateID(suffix) != nil {
			return nil, errBadMembers
		}
		return []string{suffix}, nil
	}
	return decodeMembers(val)
}

// memberCursor is a position in a batch's members: the member key (its
// last segment) and an id it lists. Members are read in key order and
// within a key in id order.
type memberCursor struct{ Key, ID string }

// String is the cursor as BatchPage's callers see it: "<key>/<id>".
func (c memberCursor) String() string {
	if c == (memberCursor{}) {
		return ""
	}
	return c.Key + "/" + c.ID
}

// parseMemberCursor reads what String returns; "" is the start.
func parseMemberCursor(s string) (memberCursor, error) {
	if s == "" {
		return memberCursor{}, nil
	}
	k, id, ok := strings.Cut(s, "/")
	if !ok || ValidateID(k) != nil || ValidateID(id) != nil {
		if len(s) > 80 {
			s = s[:80] + "..."
		}
		return memberCursor{}, fmt.Errorf("%q is not a page cursor (the next of an earlier page)", s)
	}
	return memberCursor{Key: k, ID: id}, nil
}

// after reports whether c comes after o.
func (c memberCursor) after(o memberCursor) bool {
	return c.Key > o.Key || c.Key == o.Key && c.ID > o.ID
}

// eachMember calls f with the members of batch after the cursor from, in
// order, reading member keys a page at a time, until f returns false. A
// key that does not parse is skipped.
func (s *Store) eachMember(ctx context.Context, batch string, from memberCursor, f func(c memberCursor) bool) error {
	p := batchPrefix(batch)
	end := clientv3.GetPrefixRangeEnd(p)
	key := p + from.Key
	// A key lists up to a transaction's tasks: read 2 keys first, then
	// twice as many each time up to 64, so that a short page reads few.
	for limit := int64(2); ; limit = min(2*limit, 64) {
		resp, err := s.kv.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(limit))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			suffix := string(kv.Key[len(p):])
			ids, err := memberIDs(suffix, kv.Value)
			if err != nil {
				continue
			}
			for _, id := range ids {
				if c := (memberCursor{Key: suffix, ID: id}); c.after(from) && !f(c) {
					return nil
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// member is a member key that lists a task, as read at ModRevision.
type member struct {
	Key         string
	IDs         []string
	ModRevision int64
}

// without returns the ids of m but ids, and the write that leaves m so:
// the key rewritten with the rest, or deleted with its last.
func (m member) without(ids ...string) ([]string, clientv3.Op) {
	rest := slices.DeleteFunc(slices.Clone(m.IDs), func(x string) bool { return slices.Contains(ids, x) })
	if len(rest) == 0 {
		return nil, clientv3.OpDelete(m.Key)
	}
	return rest, clientv3.OpPut(m.Key, encodeMembers(rest))
}

// findMember reads the member key of batch that lists task id, whose spec
// has order (negative: the spec is gone): among the keys named by the
// orders chunkSpan before it, or the task's own key of the former layout.
// found is false when none lists it. The keys read are also handed to
// seen (nil: none), so that a caller removing many tasks reads each key
// once.
func findMember(ctx context.Context, kv clientv3.KV, batch, id string, order int64, seen func(member)) (m member, found bool, err error) {
	ops := []clientv3.Op{clientv3.OpGet(formerMemberKey(batch, id))}
	if order >= 0 {
		from := memberKey(batch, max(order-chunkSpan+1, 0))
		ops = append(ops, clientv3.OpGet(from, clientv3.WithRange(memberKey(batch, order)+"\x00")))
	}
	resp, err := kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return member{}, false, err
	}
	p := batchPrefix(batch)
	for _, r := range resp.Responses {
		for _, k := range r.GetResponseRange().Kvs {
			ids, err := memberIDs(string(k.Key[len(p):]), k.Value)
			if err != nil {
				continue
			}
			c := member{Key: string(k.Key), IDs: ids, ModRevision: k.ModRevision}
			if seen != nil {
				seen(c)
			}
			if !found && slices.Contains(ids, id) {
				m, found = c, true
			}
		}
	}
	return m, found, nil
}

// memberCache holds the member keys a collect round read or wrote, found
// by the ids they list, so that removing a member key's tasks one after
// another reads it once. It forgets everything past maxMembers keys.
type memberCache struct {
	keys map[string]member
	byID map[string]string // id → the key that lists it
}

const maxCachedMembers = 1024

// put records m as its key now stands (no ids: the key is gone).
func (c *memberCache) put(m member) {
	if c.keys == nil || len(c.keys) >= maxCachedMembers {
		c.keys, c.byID = map[string]member{}, map[string]string{}
	}
	c.drop(m.Key)
	if len(m.IDs) == 0 {
		return
	}
	c.keys[m.Key] = m
	for _, id := range m.IDs {
		c.byID[id] = m.Key
	}
}

// drop forgets the key (to be read again).
func (c *memberCache) drop(key string) {
	if m, ok := c.keys[key]; ok {
		for _, id := range m.IDs {
			if c.byID[id] == key {
				delete(c.byID, id)
			}
		}
		delete(c.keys, key)
	}
}

// lookup returns the cached key of batch that lists id.
func (c *memberCache) lookup(batch, id string) (member, bool) {
	k, ok := c.byID[id]
	if !ok || !strings.HasPrefix(k, batchPrefix(batch)) {
		return member{}, false
	}
	return c.keys[k], true
}
