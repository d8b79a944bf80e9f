"""APIv4 `get` semantics over the in-memory store: select, where, joins, orderBy, groupBy, limit, counts.

Rows travel through the engine as a "context": a dict from join alias to a stored row ("" is the base
entity). Every field expression is compiled once per query into a getter over such a context.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .schema import ARRAY, BOOLEAN, FIELDS, INTEGER, NOTSET, STRING, Field
from .store import ApiError, Store, coerce, norm_key

OPERATORS = {
    "=", "!=", "<>", "<", ">", "<=", ">=", "IN", "NOT IN", "LIKE", "NOT LIKE", "BETWEEN", "NOT BETWEEN",
    "IS NULL", "IS NOT NULL", "IS EMPTY", "IS NOT EMPTY", "CONTAINS", "NOT CONTAINS", "REGEXP", "NOT REGEXP",
}
UNARY = {"IS NULL", "IS NOT NULL", "IS EMPTY", "IS NOT EMPTY"}
AGGREGATE_RE = re.compile(r"^(COUNT|MAX|MIN|SUM|AVG|GROUP_CONCAT)\(\s*(DISTINCT\s+)?([\w.:*]+)\s*\)(?:\s+AS\s+(\w+))?$",
                          re.IGNORECASE)
ALIAS_RE = re.compile(r"^(.+?)\s+AS\s+(\w+)$", re.IGNORECASE)
JOIN_ENTITY_RE = re.compile(r"^(\w+)(?:\s+AS\s+(\w+))?$", re.IGNORECASE)

Ctx = dict[str, Any]
Getter = Callable[[Ctx], Any]


@dataclass
class Expr:
    key: str
    getter: Getter
    field: Field
    source: str          # "" = base entity, else a join alias
    plain: bool          # a stored field of its source, no dot path and no suffix


@dataclass
class GetResult:
    values: list
    count: int
    count_matched: int | None = None


def like_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)


def sort_key(value: Any) -> tuple:
    # MySQL puts NULLs first in ascending order; text compares case-insensitively
    if value is None:
        return (0, 0, 0)
    if isinstance(value, bool | int | float):
        return (1, 0, value)
    if isinstance(value, str):
        return (1, 1, value.casefold())
    return (1, 2, str(value))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else norm_key(value)


class Engine:
    def __init__(self, store: Store, *, user_contact_id: int, email_primary: bool):
        self.store = store
        self.user_contact_id = user_contact_id
        self.email_primary = email_primary
        self._membership_cache: dict = {}

    # --- fields and expressions -------------------------------------------------------------

    def fields(self, entity: str) -> dict[str, Field]:
        fields = FIELDS[entity]
        if entity == "Contact" and not self.email_primary:
            return {k: v for k, v in fields.items() if k != "email_primary"}
        return fields

    def field_value(self, entity: str, field: Field, row: dict) -> Any:
        if field.kind == "extra" and field.name == "email_primary":
            return self.store.primary_email_id(row["id"])
        if field.kind == "computed" and field.name == "children":
            return self.store.group_children(row["id"])
        if entity == "Activity" and field.name in ("target_contact_id", "assignee_contact_id"):
            # read back from ActivityContact; 5.76 answers these ids as strings
            record_type = 3 if field.name == "target_contact_id" else 1
            links = self.store.table("ActivityContact")
            return [str(links.rows[i]["contact_id"]) for i in sorted(links.lookup("activity_id", row["id"]))
                    if links.rows[i].get("record_type_id") == record_type]
        return row.get(field.name)

    def compile_expr(self, entity: str, expr: Any, aliases: dict[str, str]) -> Expr | None:
        """A getter for `field`, `fk_field.field`, `alias.field` with an optional `:name`/`:label`; None if invalid."""
        if not isinstance(expr, str) or not expr:
            return None
        name, sep, suffix = expr.partition(":")
        parts = name.split(".")
        source, ent = "", entity
        if len(parts) > 1 and parts[0] in aliases:
            source, ent = parts[0], aliases[parts[0]]
            parts = parts[1:]
        chain: list[tuple[str, Field]] = []
        for i, part in enumerate(parts):
            field = self.fields(ent).get(part)
            if field is None or not field.readable:
                return None
            chain.append((ent, field))
            if i < len(parts) - 1:
                if not field.fk or field.data_type == ARRAY:
                    return None
                ent = field.fk
        final_entity, final = chain[-1]
        mapper = None
        if sep:
            if suffix not in ("name", "label") or not final.options:
                return None
            to_name, to_label, _ = self.store.option_maps(final)
            table = to_name if suffix == "name" else to_label
            if final.data_type == ARRAY:
                def mapper(v, table=table):
                    return None if v is None else [table.get(x) for x in v]
            else:
                def mapper(v, table=table):
                    return None if v is None else table.get(v)
        store = self.store
        plain = len(chain) == 1 and not sep and final.kind == "field"

        if plain:
            fname = final.name

            def getter(ctx, source=source, fname=fname):
                row = ctx.get(source)
                return None if row is None else row.get(fname)
        else:
            def getter(ctx):
                row = ctx.get(source)
                for ent_i, field_i in chain[:-1]:
                    if row is None:
                        return None
                    row = store.row(field_i.fk, self.field_value(ent_i, field_i, row))
                if row is None:
                    return None
                value = self.field_value(final_entity, final, row)
                return mapper(value) if mapper else value
        return Expr(expr, getter, final if not sep else Field(final.name, STRING if final.data_type != ARRAY
                                                                else ARRAY), source, plain)

    # --- where ------------------------------------------------------------------------------

    def compile_where(self, entity: str, clauses: Any, aliases: dict[str, str], *, on: bool = False
                      ) -> Callable[[Ctx], bool]:
        if clauses in (None, {}):
            clauses = []
        if not isinstance(clauses, list):
            raise ApiError("Invalid where clause: expected a list of clauses")
        preds = [self.compile_clause(entity, c, aliases, on=on) for c in clauses]
        if not preds:
            return lambda ctx: True
        if len(preds) == 1:
            return preds[0]
        return lambda ctx: _and(p(ctx) for p in preds)

    def compile_clause(self, entity: str, clause: Any, aliases: dict[str, str], *, on: bool
                       ) -> Callable[[Ctx], bool]:
        if not isinstance(clause, list) or not clause:
            raise ApiError(f"Invalid where clause: {clause!r}")
        head = clause[0]
        if head in ("OR", "AND", "NOT") and len(clause) == 2 and isinstance(clause[1], list):
            subs = [self.compile_clause(entity, c, aliases, on=on) for c in clause[1]]
            if head == "OR":
                return lambda ctx: _or(s(ctx) for s in subs)
            if head == "AND":
                return lambda ctx: _and(s(ctx) for s in subs)
            return lambda ctx: _not(_and(s(ctx) for s in subs))
        op = clause[1] if len(clause) > 1 else None
        if not isinstance(op, str) or op not in OPERATORS:
            raise ApiError("Illegal operator")
        if entity == "Contact" and isinstance(head, str) and head.split(":")[0] == "groups":
            members = self._groups_filter(head, op, clause[2] if len(clause) > 2 else None)
            if op == "IN":
                return lambda ctx: ctx[""]["id"] in members
            return lambda ctx: ctx[""]["id"] not in members
        expr = self.compile_expr(entity, head, aliases)
        if expr is None:
            raise ApiError(f"Invalid field '{head}'")
        if op in UNARY:
            return self._unary(expr, op)
        raw = clause[2] if len(clause) > 2 else None
        is_expression = on or (len(clause) > 3 and bool(clause[3]))
        if is_expression:
            right = self._expression_value(entity, raw, aliases)
        else:
            const = self._typed(expr.field, op, raw)
            right = lambda ctx, const=const: const  # noqa: E731
        return self._binary(expr, op, right, constant=not is_expression)

    def _groups_filter(self, head: str, op: str, value: Any) -> set[int]:
        if op not in ("IN", "NOT IN"):
            raise ApiError("Illegal operator for groups")
        values = value if isinstance(value, list) else [value]
        if not values:
            return set()
        groups = self.store.table("Group").rows.values()
        ids = []
        for v in values:
            if head == "groups:name":
                ids += [g["id"] for g in groups if g.get("name") == v]
            elif head == "groups:label":
                ids += [g["id"] for g in groups if g.get("title") == v]
            else:
                ids.append(coerce(Field("groups", INTEGER), v))
        return self.group_members(ids)

    def group_members(self, group_ids: list[int]) -> set[int]:
        key = (tuple(sorted(set(group_ids))), self.store.version)
        if key not in self._membership_cache:
            self._membership_cache = {k: v for k, v in self._membership_cache.items() if k[1] == key[1]}
            self._membership_cache[key] = self.store.group_members(group_ids, self._smart_members)
        return self._membership_cache[key]

    def _smart_members(self, criteria: list) -> set[int]:
        result = self.get("Contact", {"select": ["id"], "where": criteria})
        return {row["id"] for row in result.values}

    def _typed(self, field: Field, op: str, value: Any) -> Any:
        """The comparison value in the field's type (suffix values stay text: they compare against names)."""
        def one(v):
            if v is None or op in ("LIKE", "NOT LIKE", "REGEXP", "NOT REGEXP"):
                return v
            target = field
            if field.data_type == ARRAY:  # CONTAINS compares elements
                target = Field(field.name, INTEGER if field.fk else STRING)
            return coerce(target, v, user_contact_id=self.user_contact_id)

        if op in ("IN", "NOT IN"):
            values = value if isinstance(value, list) else [value]
            return [one(v) for v in values]  # 5.76: an empty IN matches nothing, it is no error
        if op in ("BETWEEN", "NOT BETWEEN"):
            if not isinstance(value, list) or len(value) != 2:
                raise ApiError(f"{op} operator requires an array of 2 values")
            return [one(v) for v in value]
        if op in ("CONTAINS", "NOT CONTAINS") and isinstance(value, list):
            return [one(v) for v in value]
        return one(value)

    def _expression_value(self, entity: str, raw: Any, aliases: dict[str, str]) -> Callable[[Ctx], Any]:
        """ON-clause values are SQL expressions: quoted strings are literals, bare words are fields."""
        if isinstance(raw, list):
            parts = [self._expression_value(entity, v, aliases) for v in raw]
            return lambda ctx: [p(ctx) for p in parts]
        if isinstance(raw, str):
            text = raw.strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                literal = text[1:-1]
                return lambda ctx: literal
            if re.fullmatch(r"-?\d+(\.\d+)?", text):
                number = float(text) if "." in text else int(text)
                return lambda ctx: number
            if text.upper() in ("NULL", "TRUE", "FALSE"):
                literal = {"NULL": None, "TRUE": True, "FALSE": False}[text.upper()]
                return lambda ctx: literal
            expr = self.compile_expr(entity, text, aliases)
            if expr is None:
                raise ApiError(f"Invalid field '{text}'")
            return expr.getter
        return lambda ctx: raw

    def _unary(self, expr: Expr, op: str) -> Callable[[Ctx], bool]:
        get = expr.getter
        numeric = expr.field.data_type in (INTEGER, BOOLEAN)

        def empty(v):
            return v is None or v == "" or v == [] or (numeric and v == 0)

        if op == "IS NULL":
            return lambda ctx: get(ctx) in (None, [])
        if op == "IS NOT NULL":
            return lambda ctx: get(ctx) not in (None, [])
        if op == "IS EMPTY":
            return lambda ctx: empty(get(ctx))
        return lambda ctx: not empty(get(ctx))

    def _binary(self, expr: Expr, op: str, right: Callable[[Ctx], Any], *, constant: bool
                ) -> Callable[[Ctx], bool | None]:
        """A comparison in SQL's three-valued logic: a NULL operand gives None ("unknown"), not False."""
        get = expr.getter
        is_array = expr.field.data_type == ARRAY
        nk = norm_key

        if op == "=":
            if constant:
                target = right({})
                if target is None:
                    return lambda ctx: None
                if is_array:
                    return lambda ctx: None if (v := get(ctx)) is None else v == target
                key = nk(target)
                return lambda ctx: None if (v := get(ctx)) is None else nk(v) == key
            return lambda ctx: None if (v := get(ctx)) is None or (r := right(ctx)) is None else nk(v) == nk(r)
        if op in ("!=", "<>"):
            return lambda ctx: None if (v := get(ctx)) is None or (r := right(ctx)) is None else nk(v) != nk(r)
        if op in ("<", ">", "<=", ">="):
            cmp = {"<": lambda a, b: a < b, ">": lambda a, b: a > b,
                   "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}[op]

            def ordered(ctx):
                v, r = get(ctx), right(ctx)
                if v is None or r is None:
                    return None
                try:
                    return cmp(nk(v), nk(r))
                except TypeError:
                    return False
            return ordered
        if op in ("IN", "NOT IN"):
            negate = op == "NOT IN"
            if constant:
                keys = {nk(x) for x in right({}) if x is not None}
                return lambda ctx: None if (v := get(ctx)) is None else (nk(v) in keys) != negate
            return lambda ctx: None if (v := get(ctx)) is None else (
                (nk(v) in {nk(x) for x in right(ctx) if x is not None}) != negate)
        if op in ("LIKE", "NOT LIKE"):
            negate = op == "NOT LIKE"

            def like(ctx):
                v, pattern = get(ctx), right(ctx)
                if v is None or pattern is None:
                    return None
                return bool(like_regex(str(pattern)).match(str(v))) != negate
            return like
        if op in ("BETWEEN", "NOT BETWEEN"):
            negate = op == "NOT BETWEEN"

            def between(ctx):
                v, bounds = get(ctx), right(ctx)
                if v is None or None in bounds:
                    return None
                try:
                    return (nk(bounds[0]) <= nk(v) <= nk(bounds[1])) != negate
                except TypeError:
                    return False
            return between
        if op in ("CONTAINS", "NOT CONTAINS"):
            negate = op == "NOT CONTAINS"

            def contains(ctx):
                v, needle = get(ctx), right(ctx)
                if v is None:
                    return None
                needles = needle if isinstance(needle, list) else [needle]
                if isinstance(v, list):
                    have = {nk(x) for x in v}
                    found = all(nk(n) in have for n in needles)
                else:
                    found = all(str(n).casefold() in str(v).casefold() for n in needles)
                return found != negate
            return contains
        negate = op == "NOT REGEXP"

        def regexp(ctx):
            v, pattern = get(ctx), right(ctx)
            if v is None or pattern is None:
                return None
            return bool(re.search(str(pattern), str(v), re.IGNORECASE)) != negate
        return regexp

    # --- get --------------------------------------------------------------------------------

    def get(self, entity: str, params: dict) -> GetResult:
        fields = self.fields(entity)
        aliases: dict[str, str] = {}
        joins = self._compile_joins(entity, params.get("join") or [], aliases)
        where = params.get("where") or []
        if not isinstance(where, list):
            raise ApiError("Invalid where clause: expected a list of clauses")
        predicate = self.compile_where(entity, where + self._default_filters(entity, where), aliases)

        select = params.get("select") or []
        items, want_count, aggregated = self._compile_select(entity, select, aliases)
        count_only = select == ["row_count"]
        group_by = params.get("groupBy") or []
        if not isinstance(group_by, list):
            raise ApiError("groupBy must be a list")
        group_exprs = []
        for g in group_by:
            expr = self.compile_expr(entity, g, aliases)
            if expr is None:
                raise ApiError(f"Invalid field '{g}'")
            group_exprs.append(expr)
        if params.get("having"):
            raise ApiError("The emulator does not implement `having`")
        if not (count_only or aggregated or (group_exprs and "id" not in group_by)) and \
                "id" not in [i[0] for i in items]:
            items.insert(0, ("id", self.compile_expr(entity, "id", aliases).getter, None))
        order = self._compile_order(entity, params.get("orderBy") or {}, aliases, items)
        limit, offset = self._int_param(params, "limit"), self._int_param(params, "offset")

        candidates, low, high = self._candidates(entity, where, fields)
        grouped = aggregated or bool(group_exprs)
        id_order = None
        if not order:
            id_order = "ASC"
        elif len(order) == 1 and order[0][0] == "id" and not order[0][2]:
            id_order = order[0][1]
        early_stop = bool(id_order and not grouped and not want_count and limit)
        wanted = offset + limit if early_stop else None

        rows: list[Ctx] = []
        stored = self.store.tables[entity].rows
        scan = self._scan(entity, candidates, low, high, reverse=id_order == "DESC")
        if joins:
            for row_id in scan:
                for ctx in self._expand({"": stored[row_id]}, joins, 0):
                    if predicate(ctx):
                        rows.append(ctx)
                if wanted is not None and len(rows) >= wanted:
                    break
        else:
            for row_id in scan:
                ctx = {"": stored[row_id]}
                if predicate(ctx):
                    rows.append(ctx)
                    if wanted is not None and len(rows) >= wanted:
                        break

        if grouped:
            outputs = self._aggregate(rows, items, group_exprs)
            if order:
                self._sort(outputs, order, lambda pair: pair[1], output_of=lambda pair: pair[0])
            total = len(outputs)
            page = outputs[offset:offset + limit] if limit else outputs[offset:]
            values = [out for out, _ in page]
        else:
            if order and not id_order:
                self._sort(rows, order, lambda ctx: ctx)
            total = len(rows)
            page = rows[offset:offset + limit] if limit else rows[offset:]
            values = [] if count_only else [{key: _copy(getter(ctx)) for key, getter, _ in items} for ctx in page]

        if count_only:
            values = []
        if want_count:
            return GetResult(values, total, total)
        if limit and len(values) == limit:
            return GetResult(values, len(values))
        return GetResult(values, len(values) + offset)

    def get_ids(self, entity: str, where: list, order_by: dict | None = None, limit: int = 0) -> list[int]:
        params = {"select": ["id"], "where": where, "orderBy": order_by or {}, "limit": limit}
        return [row["id"] for row in self.get(entity, params).values]

    @staticmethod
    def _int_param(params: dict, name: str) -> int:
        value = params.get(name) or 0
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ApiError(f"Invalid value for {name}: expected an integer")
        try:
            number = int(value)
        except ValueError as exc:
            raise ApiError(f"Invalid value for {name}: expected an integer") from exc
        if number < 0:
            raise ApiError(f"Invalid value for {name}: must not be negative")
        return number

    def _default_filters(self, entity: str, where: list) -> list:
        defaults = [f for f in self.fields(entity).values() if f.get_default is not NOTSET]
        if not defaults:
            return []
        # `id = N` / `id IN [...]` at the top level lifts every default filter (_itemsToGet('id'))
        for clause in where:
            if isinstance(clause, list) and len(clause) >= 3 and clause[0] == "id" and clause[1] in ("=", "IN"):
                return []
        named = set(_where_fields(where))
        return [[f.name, "=", f.get_default] for f in defaults if f.name not in named]

    def _compile_joins(self, entity: str, joins: Any, aliases: dict[str, str]) -> list:
        if not isinstance(joins, list):
            raise ApiError("join must be a list")
        compiled = []
        for spec in joins:
            if not isinstance(spec, list) or len(spec) < 2 or not isinstance(spec[0], str):
                raise ApiError(f"Invalid join: {spec!r}")
            m = JOIN_ENTITY_RE.match(spec[0].strip())
            if not m or m.group(1) not in FIELDS:
                raise ApiError(f"Illegal join: {spec[0]!r} is not an entity")
            join_entity = m.group(1)
            alias = m.group(2) or join_entity.lower()
            side = spec[1]
            if side is True:
                side = "INNER"
            elif side is False:
                side = "LEFT"
            if side not in ("LEFT", "INNER", "EXCLUDE"):
                raise ApiError(f"Illegal value for join side: '{side}'.")
            conditions = spec[2:]
            if conditions and isinstance(conditions[0], str):
                raise ApiError("The emulator does not implement bridge joins; join the bridge entity explicitly")
            aliases[alias] = join_entity
            predicate = self.compile_where(entity, list(conditions), aliases, on=True)
            key_field, key_value = self._join_key(entity, alias, join_entity, conditions, aliases)
            compiled.append((alias, join_entity, side, predicate, key_field, key_value))
        return compiled

    def _join_key(self, entity, alias, join_entity, conditions, aliases):
        """An `alias.id = expr` or `alias.<indexed> = expr` condition lets a join use a lookup, not a scan."""
        indexed = {"id", *self.store.table(join_entity).index_fields}
        links, literals = [], []
        for cond in conditions:
            if not (isinstance(cond, list) and len(cond) == 3 and cond[1] == "="):
                continue
            for mine, other in ((cond[0], cond[2]), (cond[2], cond[0])):
                if not isinstance(mine, str) or not mine.startswith(alias + "."):
                    continue
                name = mine[len(alias) + 1:]
                if name not in indexed:
                    continue
                if isinstance(other, str) and other.startswith(alias + "."):
                    continue
                is_field = isinstance(other, str) and re.fullmatch(r"[A-Za-z_][\w.:]*", other.strip()) is not None \
                    and other.strip().upper() not in ("NULL", "TRUE", "FALSE")
                (links if is_field else literals).append((name, other))
        # a link to the outer row (e.g. `uf.contact_id = id`) narrows to a few rows; a literal may match many
        for name, other in links + literals:
            return name, self._expression_value(entity, other, aliases)
        return None, None

    def _expand(self, ctx: Ctx, joins: list, i: int) -> Iterator[Ctx]:
        if i == len(joins):
            yield ctx
            return
        alias, join_entity, side, predicate, key_field, key_value = joins[i]
        table = self.store.table(join_entity)
        if key_field is None:
            candidates = (table.rows[j] for j in table.ids)
        else:
            key = key_value(ctx)
            if key_field == "id":
                row = self.store.row(join_entity, key) if not isinstance(key, float) else None
                candidates = [row] if row is not None else []
            else:
                candidates = [table.rows[j] for j in sorted(table.lookup(key_field, key))] if key is not None else []
        matched = False
        for row in candidates:
            joined = {**ctx, alias: row}
            if predicate(joined):
                matched = True
                if side == "EXCLUDE":
                    return
                yield from self._expand(joined, joins, i + 1)
        if not matched and side in ("LEFT", "EXCLUDE"):
            yield from self._expand({**ctx, alias: None}, joins, i + 1)

    def _compile_select(self, entity: str, select: Any, aliases: dict[str, str]):
        if not isinstance(select, list):
            raise ApiError("select must be a list")
        items: list[tuple[str, Getter, Any]] = []
        want_count = False
        aggregated = False
        readable = [f.name for f in self.fields(entity).values() if f.kind in ("field", "computed")]
        exprs = list(select) if select else ["*"]
        for item in exprs:
            if not isinstance(item, str):
                continue
            if item == "row_count":
                want_count = True
                continue
            if "*" in item and not AGGREGATE_RE.match(item):
                prefix, _, pattern = item.rpartition(".")
                if prefix and prefix in aliases:
                    names = [f"{prefix}.{f.name}" for f in self.fields(aliases[prefix]).values()
                             if f.kind in ("field", "computed") and fnmatch.fnmatchcase(f.name, pattern)]
                elif not prefix:
                    names = [n for n in readable if fnmatch.fnmatchcase(n, pattern)]
                else:
                    names = []
                for name in names:
                    if name not in [i[0] for i in items]:
                        items.append((name, self.compile_expr(entity, name, aliases).getter, None))
                continue
            agg = AGGREGATE_RE.match(item)
            if agg:
                func, distinct, arg, alias = agg.group(1).upper(), bool(agg.group(2)), agg.group(3), agg.group(4)
                expr = None if arg == "*" else self.compile_expr(entity, arg, aliases)
                if arg != "*" and expr is None:
                    continue
                items.append((alias or f"{func}:{arg}", expr.getter if expr else (lambda ctx: 1),
                              (func, distinct)))
                aggregated = True
                continue
            key = item
            m = ALIAS_RE.match(item)
            if m:
                item, key = m.group(1), m.group(2)
            expr = self.compile_expr(entity, item, aliases)
            if expr is None:  # unknown select fields are dropped silently, as CiviCRM does
                continue
            if key not in [i[0] for i in items]:
                items.append((key, expr.getter, None))
        return items, want_count, aggregated

    def _compile_order(self, entity, order_by, aliases, items):
        if isinstance(order_by, list) and not order_by:
            return []
        if not isinstance(order_by, dict):
            raise ApiError("orderBy must be an object like {\"id\": \"ASC\"}")
        compiled = []
        selected = {key: (getter, agg) for key, getter, agg in items}
        for expr_text, direction in order_by.items():
            if direction not in ("ASC", "DESC"):
                raise ApiError(f"Invalid sort direction. Cannot order by {expr_text} {direction}")
            if expr_text in selected and (selected[expr_text][1] is not None or self.compile_expr(
                    entity, expr_text, aliases) is None):
                compiled.append((expr_text, direction, True, selected[expr_text][0]))
                continue
            expr = self.compile_expr(entity, expr_text, aliases)
            if expr is None:
                raise ApiError(f"Invalid field '{expr_text}'")
            compiled.append((expr_text, direction, False, expr.getter))
        return compiled

    @staticmethod
    def _sort(rows: list, order: list, ctx_of, output_of=None) -> None:
        # stable multi-key sort: apply keys from last to first
        for key, direction, is_output, getter in reversed(order):
            if is_output and output_of is not None:
                rows.sort(key=lambda r, k=key: sort_key(output_of(r).get(k)), reverse=direction == "DESC")
            else:
                rows.sort(key=lambda r, g=getter: sort_key(g(ctx_of(r))), reverse=direction == "DESC")

    def _aggregate(self, rows: list[Ctx], items, group_exprs) -> list[tuple[dict, Ctx]]:
        groups: dict[tuple, list[Ctx]] = {}
        for ctx in rows:
            key = tuple(_hashable(e.getter(ctx)) for e in group_exprs)
            groups.setdefault(key, []).append(ctx)
        if not groups and not group_exprs:
            groups[()] = []
        outputs = []
        for members in groups.values():
            out = {}
            for key, getter, agg in items:
                if agg is None:
                    out[key] = _copy(getter(members[0])) if members else None
                    continue
                func, distinct = agg
                values = [getter(c) for c in members]
                values = [v for v in values if v is not None]
                if distinct:
                    seen, unique = set(), []
                    for v in values:
                        if _hashable(v) not in seen:
                            seen.add(_hashable(v))
                            unique.append(v)
                    values = unique
                if func == "COUNT":
                    out[key] = len(values)
                elif func == "GROUP_CONCAT":
                    out[key] = values
                elif not values:
                    out[key] = None
                elif func == "MAX":
                    out[key] = max(values, key=sort_key)
                elif func == "MIN":
                    out[key] = min(values, key=sort_key)
                elif func == "SUM":
                    out[key] = sum(values)
                else:
                    out[key] = sum(values) / len(values)
            outputs.append((out, members[0] if members else {"": None}))
        return outputs

    def _candidates(self, entity: str, where: list, fields: dict[str, Field]):
        """Narrow the scan with the top-level clauses an index can answer; the full predicate still applies."""
        table = self.store.table(entity)
        candidates: set[int] | None = None
        low = high = None  # (value, inclusive)

        def narrow(ids):
            # Index sets are used as they are, never copied or changed: a copy per call would make
            # a save of N records against a large group O(N * group size).
            nonlocal candidates
            ids = ids if isinstance(ids, set | frozenset) else set(ids)
            candidates = ids if candidates is None else candidates & ids

        for clause in where:
            if not (isinstance(clause, list) and len(clause) >= 3 and isinstance(clause[0], str)):
                continue
            name, op, value = clause[0], clause[1], clause[2]
            if len(clause) > 3 and clause[3]:
                continue
            try:
                if name == "id":
                    if op == "=":
                        narrow([coerce(fields["id"], value, user_contact_id=self.user_contact_id)])
                    elif op == "IN" and isinstance(value, list) and value:
                        narrow(coerce(fields["id"], v, user_contact_id=self.user_contact_id) for v in value)
                    elif op in (">", ">=") and value is not None:
                        v = coerce(fields["id"], value)
                        if low is None or v > low[0] or (v == low[0] and op == ">"):
                            low = (v, op == ">=")
                    elif op in ("<", "<=") and value is not None:
                        v = coerce(fields["id"], value)
                        if high is None or v < high[0] or (v == high[0] and op == "<"):
                            high = (v, op == "<=")
                elif name in table.index_fields and op in ("=", "IN"):
                    values = value if isinstance(value, list) else [value]
                    if values and all(v is not None for v in values):
                        typed = [coerce(fields[name], v, user_contact_id=self.user_contact_id) for v in values]
                        narrow(table.lookup(name, typed[0]) if len(typed) == 1
                               else set().union(*(table.lookup(name, v) for v in typed)))
                elif entity == "Contact" and name == "groups" and op == "IN" and isinstance(value, list) and value:
                    narrow(self.group_members([coerce(Field("groups", INTEGER), v) for v in value]))
            except (ApiError, TypeError):
                continue  # the predicate reports bad values; narrowing just gives up
        return candidates, low, high

    def _scan(self, entity, candidates, low, high, *, reverse: bool) -> Iterator[int]:
        table = self.store.table(entity)
        ids = table.ids
        start = 0 if low is None else (bisect.bisect_left(ids, low[0]) if low[1] else bisect.bisect_right(ids, low[0]))
        end = len(ids) if high is None else (bisect.bisect_right(ids, high[0]) if high[1]
                                             else bisect.bisect_left(ids, high[0]))
        if candidates is not None and len(candidates) * 8 < max(end - start, 1):
            in_range = sorted(i for i in candidates if i in table.rows
                              and (low is None or i > low[0] or (low[1] and i == low[0]))
                              and (high is None or i < high[0] or (high[1] and i == high[0])))
            yield from (reversed(in_range) if reverse else in_range)
            return
        span = range(end - 1, start - 1, -1) if reverse else range(start, end)
        if candidates is None:
            for pos in span:
                yield ids[pos]
        else:
            for pos in span:
                if ids[pos] in candidates:
                    yield ids[pos]


def _and(results) -> bool | None:
    unknown = False
    for result in results:
        if result is False:
            return False
        if result is None:
            unknown = True
    return None if unknown else True


def _or(results) -> bool | None:
    unknown = False
    for result in results:
        if result is True:
            return True
        if result is None:
            unknown = True
    return None if unknown else False


def _not(result: bool | None) -> bool | None:
    return None if result is None else not result


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _where_fields(clauses: Any) -> Iterator[str]:
    if not isinstance(clauses, list):
        return
    for clause in clauses:
        if not isinstance(clause, list) or not clause:
            continue
        if clause[0] in ("OR", "AND", "NOT") and len(clause) == 2 and isinstance(clause[1], list):
            yield from _where_fields(clause[1])
        elif isinstance(clause[0], str):
            yield clause[0].split(":")[0]

