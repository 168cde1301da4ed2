"""Who may take which action on which case: the ``authority`` section of the knowledge base 责任清单.

The policy is data (``streams/data/kb.yaml``), loaded and validated with the KB, and enforced by
the lifecycle before any action changes a case. An action maps to the *roles* allowed to take it
(optionally per stage); ``requests`` lists roles that may only *ask* for an action, which the
centre then grants (the same action) or refuses (``deny_<action>``). Roles are relations between
the actor and the case document:

``centre``      the grid centre (``actor_kind`` center)
``department``  a department the case has been dispatched to (``actor_id`` among the case's
                departments or their instances serving its street, ``units``, after 派遣) — a
                department acts only on its own cases
``originator``  the inspector, residential station or committee that reported the case
                (the first report's kind and reporter id)
``closer``      who verifies and closes (谁发单、谁验收、谁结案): the originator when its kind is in
                ``originator_closes``, the centre otherwise
``inspector``   a grid inspector 网格监督员, on a case the centre verifies (the centre sends one to
                核查); never on a case a station or committee verifies itself

The actor (``actor_kind``, ``actor_id``) is the authenticated identity the front door stamps on
the record (docs/security.md "Trust model"); this module only decides what that identity may do.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("centre", "department", "originator", "closer", "inspector")
CENTRE_KIND = "center"
DEPARTMENT_KINDS = ("department", "station", "center")   # kinds that act under a directory name
ORIGINATOR_KINDS = ("inspector", "station", "committee")  # reporters who are people, not devices
DENY_PREFIX = "deny_"


class PolicyError(ValueError):
    """An authority section that does not make sense; ``loc`` is the path of the offending field."""

    def __init__(self, loc: tuple[Any, ...], problem: str) -> None:
        super().__init__(problem)
        self.loc = loc
        self.problem = problem


class NotAuthorised(Exception):
    """The actor may not take this action on this case; ``reason`` says who may."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    """What the actor may do: take the action (``request`` False) or only ask for it (True)."""

    roles: frozenset[str]
    request: bool = False


@dataclass(frozen=True)
class ActorPolicy:
    grants: Mapping[str, Mapping[str | None, frozenset[str]]]   # action -> stage (None: any) -> roles
    requests: Mapping[str, frozenset[str]]                        # action -> roles that may only ask
    originator_closes: frozenset[str]

    # ------------------------------------------------------------ roles

    def roles_of(self, doc: Mapping[str, Any], actor_kind: str, actor_id: str) -> frozenset[str]:
        """Every role the actor holds on this case."""
        roles: set[str] = set()
        if actor_kind == CENTRE_KIND:
            roles.add("centre")
        if (actor_kind in DEPARTMENT_KINDS and self.is_case_department(doc, actor_id)
                and "dispatch" in (doc.get("stages") or {})):
            roles.add("department")
        origin = doc.get("origin")
        if origin in ORIGINATOR_KINDS and actor_kind == origin and actor_id and actor_id == doc.get("origin_reporter"):
            roles.add("originator")
        if origin in self.originator_closes:
            if "originator" in roles:
                roles.add("closer")
        else:
            if "centre" in roles:
                roles.add("closer")
            if actor_kind == "inspector":
                roles.add("inspector")
        return frozenset(roles)

    def closer_of(self, doc: Mapping[str, Any]) -> tuple[str, str | None]:
        """(actor_kind, actor_id) of who verifies and closes: the reporting station/committee for the kinds
        in ``originator_closes``, else the centre (``(CENTRE_KIND, None)``: any centre)."""
        if doc.get("origin") in self.originator_closes:
            return str(doc["origin"]), doc.get("origin_reporter")
        return CENTRE_KIND, None

    @staticmethod
    def is_case_department(doc: Mapping[str, Any], actor_id: str) -> bool:
        """A department of the case, by its directory name (城管执法中队) or as the instance serving the
        case's street (徐家汇街道城管中队, the case's ``units``)."""
        return actor_id in (doc.get("departments") or []) or actor_id in (doc.get("units") or [])

    def closer_text(self, doc: Mapping[str, Any]) -> str:
        origin = doc.get("origin")
        if origin in self.originator_closes:
            return f"the reporting {origin} {doc.get('origin_reporter') or ''}".rstrip()
        return "the centre"

    # ------------------------------------------------------------ decisions

    def allowed_roles(self, action: str, stage: str) -> frozenset[str]:
        by_stage = self.grants.get(action, {})
        return by_stage.get(stage, by_stage.get(None, frozenset()))

    def decide(self, doc: Mapping[str, Any], actor_kind: str, actor_id: str, action: str) -> Decision:
        """The actor's standing for ``action`` on the case in its current stage, or NotAuthorised."""
        stage = doc.get("stage", "")
        held = self.roles_of(doc, actor_kind, actor_id)
        allowed = self.allowed_roles(action, stage)
        if held & allowed:
            return Decision(held & allowed)
        if held & self.requests.get(action, frozenset()):
            return Decision(held & self.requests[action], request=True)
        raise NotAuthorised(self._refusal(doc, actor_kind, actor_id, action, stage, held, allowed))

    def _refusal(self, doc: Mapping[str, Any], actor_kind: str, actor_id: str, action: str, stage: str,
                 held: frozenset[str], allowed: frozenset[str]) -> str:
        who = f"{actor_kind} {actor_id}".strip()
        asks = self.requests.get(action, frozenset())
        if not allowed and not asks:
            return f"not authorised: nobody may '{action}' a case in stage {stage}"
        may = self._describe_all(doc, allowed) or "nobody"
        tail = f" ({self._describe_all(doc, asks)} may request it)" if asks else ""
        if "closer" in allowed and doc.get("origin") in self.originator_closes:
            tail += " (谁发单、谁验收、谁结案)"
        if ("department" in allowed or "department" in asks) and actor_kind in DEPARTMENT_KINDS \
                and "department" not in held:
            tail += (f"; the case is not dispatched to {actor_id}" if not self.is_case_department(doc, actor_id)
                     else "; the case has not been dispatched yet")
        return f"not authorised: {who} may not '{action}' this case; only {may} may{tail}"

    def _describe_all(self, doc: Mapping[str, Any], roles: frozenset[str]) -> str:
        # a citizen or a device reported it: nobody holds the originator role (and no pseudonym is named)
        holdable = [r for r in sorted(roles) if (r != "originator" or doc.get("origin") in ORIGINATOR_KINDS)
                    and (r != "inspector" or doc.get("origin") not in self.originator_closes)]
        return " or ".join(dict.fromkeys(self._describe(doc, r) for r in holdable))

    def _describe(self, doc: Mapping[str, Any], role: str) -> str:
        if role == "department":
            departments, units = list(doc.get("departments") or []), list(doc.get("units") or [])
            serving = f" as {units}" if units and units != departments else ""
            return f"its departments {departments}{serving}"
        if role == "originator":
            return f"the reporting {doc.get('origin')} {doc.get('origin_reporter') or ''}".rstrip()
        if role == "closer":
            return self.closer_text(doc)
        if role == "inspector":
            return "a grid inspector"
        return "the centre"


def parse_policy(data: Mapping[str, Any], actions: Sequence[str], stages: Sequence[str]) -> ActorPolicy:
    """Validate the ``authority`` section. Every action of the lifecycle needs an entry (an action nobody
    may take is a gap in the 责任清单, said out loud); roles and stages must be known."""
    if not isinstance(data, Mapping):
        raise PolicyError((), "must be a mapping with 'actions' (and optionally 'requests', 'originator_closes')")
    unknown_keys = set(data) - {"actions", "requests", "originator_closes"}
    if unknown_keys:
        raise PolicyError((sorted(unknown_keys)[0],), "unknown key (expected actions, requests, originator_closes)")

    def roles(value: Any, loc: tuple[Any, ...]) -> frozenset[str]:
        if not isinstance(value, list) or not value:
            raise PolicyError(loc, "expected a non-empty list of roles")
        for i, role in enumerate(value):
            if role not in ROLES:
                raise PolicyError(loc + (i,), f"unknown role {role!r} (one of {', '.join(ROLES)})")
        return frozenset(value)

    def known_action(name: Any, loc: tuple[Any, ...]) -> str:
        if name not in actions:
            raise PolicyError(loc, f"unknown action {name!r} (one of {', '.join(actions)})")
        return str(name)

    raw_actions = data.get("actions")
    if not isinstance(raw_actions, Mapping):
        raise PolicyError(("actions",), "expected a mapping action -> roles (or stage -> roles)")
    grants: dict[str, dict[str | None, frozenset[str]]] = {}
    for name, spec in raw_actions.items():
        known_action(name, ("actions", name))
        if isinstance(spec, Mapping):
            by_stage: dict[str | None, frozenset[str]] = {}
            for stage, value in spec.items():
                if stage not in stages:
                    raise PolicyError(("actions", name, stage), f"unknown stage {stage!r} (one of {', '.join(stages)})")
                by_stage[str(stage)] = roles(value, ("actions", name, stage))
            grants[name] = by_stage
        else:
            grants[name] = {None: roles(spec, ("actions", name))}
    missing = [a for a in actions if a not in grants]
    if missing:
        raise PolicyError(("actions",), f"no entry for action(s) {', '.join(missing)}: say who may take them")
    requests: dict[str, frozenset[str]] = {}
    raw_requests = data.get("requests") or {}
    if not isinstance(raw_requests, Mapping):
        raise PolicyError(("requests",), "expected a mapping action -> roles that may only request it")
    for name, value in raw_requests.items():
        known_action(name, ("requests", name))
        if f"{DENY_PREFIX}{name}" not in actions:
            raise PolicyError(("requests", name),
                              f"'{name}' cannot be requested: the lifecycle has no '{DENY_PREFIX}{name}'")
        requests[name] = roles(value, ("requests", name))
    closes = data.get("originator_closes") or []
    if not isinstance(closes, list) or any(k not in ORIGINATOR_KINDS for k in closes):
        raise PolicyError(("originator_closes",),
                          f"expected a list of reporter kinds among {', '.join(ORIGINATOR_KINDS)}")
    return ActorPolicy(grants, requests, frozenset(closes))

