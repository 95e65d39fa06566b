"""What happens on each click, modal and command. Runs off the event loop, after the ack.

Every refusal is an ephemeral message to the clicker; nothing is recorded for it except the
`click.refused` audit entry (so the digest can count refused clicks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.clock import utc_now
from bot.slack.alerts import break_glass_blocks, break_glass_text
from bot.slack.cards import headline, when
from bot.slack.directory import SlackDirectory
from bot.slack.markup import NO_UNFURL, Shown, code, escape, person
from bot.slack.views import confirm_modal, deny_modal, full_request_view, home_view
from core.approvals import tally
from core.errors import IllegalTransition, NotEligible, NotFound, StepupError, ValidationFailed
from core.model import Approver, Status, Vote
from core.service import Stepup
from core.snapshots import RequestSnapshot

logger = logging.getLogger(__name__)
PENDING_LINES = 10  # each line is bounded (headline); ten stay well within one message


def revoked_in_slack(person: Approver) -> str:
    """The reason recorded when someone revokes from Slack (a button or ``/stepup revoke``)."""
    return f"revoked in Slack by {person.name or person.email or person.slack_user_id}"


def no_request(request_id: str) -> str:
    """The answer for an unknown id, and for a request the person is no party to: the same.
    The id is whatever the person typed, so it is shown as a code span."""
    return f"There is no request {code(request_id)}."


class ApprovalActions:
    def __init__(
        self,
        service: Stepup,
        client: WebClient,
        directory: SlackDirectory,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.service = service
        self.client = client
        self.directory = directory
        self.clock = clock

    # -- helpers ---------------------------------------------------------------------------

    def tell(self, channel: str | None, user_id: str, text: str) -> None:
        """An ephemeral message in the channel of the click, or a DM when there is none."""
        try:
            if channel:
                self.client.chat_postEphemeral(channel=channel, user=user_id, text=text)
            else:
                self.client.chat_postMessage(channel=user_id, text=text, **NO_UNFURL)
        except SlackApiError as exc:
            logger.warning("could not tell %s: %s", user_id, exc.response.get("error"))

    def usergroups(self) -> dict[str, frozenset[str]]:
        groups = self.service.policy.current.groups.values()
        return {
            g.slack_usergroup: self.directory.usergroup_members(g.slack_usergroup)
            for g in groups
            if g.slack_usergroup
        }

    def already(self, snapshot: RequestSnapshot) -> str:
        if snapshot.status is Status.EXPIRED:
            return f"This request expired at {when(snapshot.updated_at)}."
        if snapshot.status is Status.PENDING:
            return f"This request's approval window closed at {when(snapshot.expires_at)}."
        deciders = [person(v.name or v.email or v.slack_user_id) for v in snapshot.votes]
        by = f" by {', '.join(deciders)}" if deciders else ""
        at = when(snapshot.decided_at or snapshot.updated_at)
        return f"Already {snapshot.status.value}{by} at {at}."

    def _late(self, request_id: str, person: Approver) -> str:
        """A click on a decided or expired card: make the card catch up, and say why to the
        request's parties; anyone else hears what an unknown id would get."""
        now = self.clock()
        self.service.expire_one(request_id, now=now)  # a pending request past its deadline
        self.service.request_card_refresh(request_id, now=now)
        try:
            snapshot = self._visible(request_id, person)
        except NotFound:
            return no_request(request_id)
        return self.already(snapshot)

    def _visible(self, request_id: str, person: Approver) -> RequestSnapshot:
        """The request if ``person`` is one of its parties; NotFound as for an unknown id."""
        return self.service.get_for_person(
            request_id, person, now=self.clock(), usergroup_members=self.usergroups()
        )

    # -- clicks ----------------------------------------------------------------------------

    def approve_clicked(
        self, request_id: str, user_id: str, channel: str | None, trigger_id: str | None
    ) -> None:
        try:
            snapshot: RequestSnapshot | None = self._visible(
                request_id, self.directory.approver(user_id)
            )
        except NotFound:
            snapshot = None  # no such request, or none of theirs: the vote answers, showing nothing
        if snapshot and snapshot.terms.step_up and snapshot.status is Status.PENDING:
            if trigger_id:
                self.client.views_open(trigger_id=trigger_id, view=confirm_modal(snapshot, channel))
            return
        self.vote(request_id, user_id, channel, Vote.APPROVE)

    def deny_clicked(
        self, request_id: str, user_id: str, channel: str | None, trigger_id: str | None
    ) -> None:
        if trigger_id:
            self.client.views_open(trigger_id=trigger_id, view=deny_modal(request_id, channel))

    def vote(
        self,
        request_id: str,
        user_id: str,
        channel: str | None,
        vote: Vote,
        *,
        reason: str | None = None,
        confirmation: str | None = None,
    ) -> None:
        approver: Approver = self.directory.approver(user_id)
        try:
            result = self.service.vote(
                request_id,
                approver,
                vote,
                now=self.clock(),
                reason=reason,
                confirmation=confirmation,
                usergroup_members=self.usergroups(),
            )
        except NotEligible as refusal:
            if refusal.why == "already_decided":
                self.tell(channel, user_id, self._late(request_id, approver))
            else:
                self.tell(channel, user_id, f":no_entry: {refusal.detail}. Nothing was recorded.")
            return
        except IllegalTransition:
            self.tell(channel, user_id, self._late(request_id, approver))
            return
        except NotFound:
            self.tell(channel, user_id, no_request(request_id))
            return
        except StepupError as exc:
            self.tell(channel, user_id, f":warning: {escape(exc.detail)}")
            return
        if not result.counted:
            self.tell(channel, user_id, "Your decision was already recorded; it counts once.")

    def revoke_clicked(self, request_id: str, user_id: str, channel: str | None) -> None:
        approver = self.directory.approver(user_id)
        try:
            self.service.revoke_by_person(
                request_id,
                approver,
                now=self.clock(),
                reason=revoked_in_slack(approver),
                usergroup_members=self.usergroups(),
            )
        except NotEligible as refusal:
            self.tell(channel, user_id, f":no_entry: {refusal.detail}.")
        except IllegalTransition:
            self.tell(channel, user_id, self._late(request_id, approver))
        except StepupError as exc:
            self.tell(channel, user_id, f":warning: {escape(exc.detail)}")

    def break_glass_ack_clicked(
        self, request_id: str, user_id: str, channel: str | None, ts: str | None
    ) -> None:
        try:
            snapshot = self.service.review_break_glass(
                request_id,
                self.directory.approver(user_id),
                now=self.clock(),
                usergroup_members=self.usergroups(),
            )
        except NotEligible as refusal:
            self.tell(channel, user_id, f":no_entry: {refusal.detail}. Nothing was recorded.")
            return
        except StepupError as exc:
            self.tell(channel, user_id, f":warning: {escape(exc.detail)}")
            snapshot = self.service.get(request_id)
        if channel and ts:
            self.client.chat_update(
                channel=channel,
                ts=ts,
                text=break_glass_text(snapshot),
                blocks=break_glass_blocks(snapshot),
                **NO_UNFURL,
            )

    def show_all_clicked(self, request_id: str, user_id: str, trigger_id: str | None) -> None:
        """The whole request, as the message it was clicked on shows it in part; only to
        the request's parties, like ``/stepup status``."""
        try:
            snapshot = self._visible(request_id, self.directory.approver(user_id))
        except NotFound:
            self.tell(None, user_id, no_request(request_id))
            return
        if trigger_id:
            self.client.views_open(trigger_id=trigger_id, view=full_request_view(snapshot))

    def show_page_clicked(self, value: str, user_id: str, view_id: str | None) -> None:
        """Another page of the whole request, in the modal the click came from."""
        request_id, _, page = value.partition(" ")
        if not (view_id and page.isdigit()):
            return
        try:
            snapshot = self._visible(request_id, self.directory.approver(user_id))
        except NotFound:
            return
        self.client.views_update(view_id=view_id, view=full_request_view(snapshot, int(page)))

    # -- modals ----------------------------------------------------------------------------

    def confirmation_error(self, request_id: str, typed: str) -> str | None:
        """Checked before the modal closes, so a typo keeps it open with a message."""
        try:
            snapshot = self.service.get(request_id)
        except NotFound:
            return "This request no longer exists."
        if typed.strip() != snapshot.target:
            return f"That is not the target's name. Type {snapshot.target[:200]} exactly."
        return None

    # -- home and command ------------------------------------------------------------------

    def publish_home(self, user_id: str) -> None:
        approver = self.directory.approver(user_id)
        pending, active = self.service.dashboard(
            approver, now=self.clock(), usergroup_members=self.usergroups()
        )
        self.client.views_publish(user_id=user_id, view=home_view(pending, active))

    def command(self, text: str, user_id: str, channel: str | None) -> str:
        words = text.split()
        verb = words[0].lower() if words else "help"
        if verb == "pending":
            approver = self.directory.approver(user_id)
            pending, _ = self.service.dashboard(
                approver, now=self.clock(), usergroup_members=self.usergroups()
            )
            if not pending:
                return "Nothing is waiting for your decision."
            return (
                "\n".join(  # stepup's words first, the agent's last
                    f"• {code(s.id)} {tally(s.votes, s.terms.quorum).received} of "
                    f"{s.terms.quorum}, decide before {when(s.expires_at)} — {headline(s, Shown())}"
                    for s in pending[:PENDING_LINES]
                )
                + (
                    f"\n… and {len(pending) - PENDING_LINES} more"
                    if len(pending) > PENDING_LINES
                    else ""
                )
            )
        if verb == "status" and len(words) == 2:
            try:
                s = self._visible(words[1], self.directory.approver(user_id))
            except NotFound:
                return no_request(words[1])
            return f"*{s.status.value}* — {code(s.id)}: {headline(s, Shown())}"
        if verb == "revoke" and len(words) == 2:
            try:
                person = self.directory.approver(user_id)
                self._visible(words[1], person)  # to a stranger the request does not exist
                self.service.revoke_by_person(
                    words[1],
                    person,
                    now=self.clock(),
                    reason=revoked_in_slack(person),
                    usergroup_members=self.usergroups(),
                )
            except NotFound:
                return no_request(words[1])
            except (NotEligible, IllegalTransition, ValidationFailed) as exc:
                return f":no_entry: {exc.detail}"
            return f"`{words[1]}` revoked; its credential no longer works."
        return (
            "*stepup* — approvals for AI agents\n"
            "• `/stepup pending` — requests waiting for your decision\n"
            "• `/stepup status REQUEST_ID` — where a request stands\n"
            "• `/stepup revoke REQUEST_ID` — revoke a live credential now\n"
            "• `/stepup help` — this message"
        )
