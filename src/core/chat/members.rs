//! Members: adding and removing them, with the roles that may.

use super::*;

impl Chat {
    /// # Add members (owner/admin; groups only)
    /// Admins may add ordinary members; only the owner may add admins.
    pub async fn add_members(
        &self,
        user: &User,
        id: &str,
        req: AddMembers,
    ) -> Result<Conversation, ChatError> {
        self.spend(BudgetKind::AddMembers, user).await?;
        let (member, kind) = self.require_member(id, user).await?;
        if kind == ConversationType::Direct {
            return Err(ChatError::conflict("a direct conversation has fixed members"));
        }
        if !member.role.is_manager() {
            return Err(ChatError::forbidden("only the owner or an admin may add members"));
        }
        let role = req.role.unwrap_or(Role::Member);
        match role {
            Role::Owner => return Err(ChatError::invalid("role must be member or admin")),
            Role::Admin if member.role != Role::Owner => {
                return Err(ChatError::forbidden("only the owner may add admins"));
            }
            _ => {}
        }
        if req.user_ids.is_empty() {
            return Err(ChatError::invalid("user_ids must not be empty"));
        }
        for uid in &req.user_ids {
            validate::identifier("user_ids[]", uid)?;
        }
        let current = self.load_conversation(id, user).await?;
        let newcomers = req.user_ids.iter().filter(|uid| current.member(uid).is_none()).count();
        if current.members.len() + newcomers > self.limits.max_members {
            return Err(ChatError::TooLarge(format!(
                "a group has at most {} members",
                self.limits.max_members
            )));
        }
        let Some(added) = self.store.add_members(id, req.user_ids, role, Timestamp::now(), &user.id).await?
        else {
            return Err(ChatError::forbidden(GROUP_WITH_BLOCKER));
        };
        let conversation = self.load_conversation(id, user).await?;
        if !added.is_empty() {
            let event = ServerEvent::ConversationUpdated(conversation.clone().shared());
            self.deliver(Audience::Conversation(id.to_owned()), user, event);
            self.announce_new_members(&conversation, &added);
        }
        Ok(conversation.viewed_by(&user.id))
    }

    /// # Remove a member
    /// Anyone may leave; the owner may remove anyone, an admin only ordinary members. When
    /// the owner leaves a group, the longest-standing admin (else member) becomes owner.
    pub async fn remove_member(&self, user: &User, id: &str, target: &str) -> Result<(), ChatError> {
        let (member, kind) = self.require_member(id, user).await?;
        if kind == ConversationType::Direct {
            return Err(ChatError::conflict("a direct conversation has fixed members"));
        }
        let conversation = self.load_conversation(id, user).await?;
        let Some(target_member) = conversation.member(target) else {
            return Err(ChatError::not_found("no such member"));
        };
        if target != user.id {
            let allowed = match member.role {
                Role::Owner => true,
                Role::Admin => target_member.role == Role::Member,
                Role::Member => false,
            };
            if !allowed {
                return Err(ChatError::forbidden("your role does not allow removing this member"));
            }
        }
        // The store passes ownership on, in the same transaction (see `Store::remove_member`).
        if self.store.remove_member(id, target).await? {
            // Stop their connections' traffic at once, then tell everyone, them included.
            self.bus.publish(BusMessage::Unsubscribe {
                user_id: target.to_owned(),
                conversation_id: id.to_owned(),
            });
            let conversation = self.load_conversation(id, user).await?;
            let event = ServerEvent::ConversationUpdated(conversation.shared());
            self.deliver(Audience::Conversation(id.to_owned()), user, event.clone());
            self.deliver(Audience::Users(vec![target.to_owned()]), user, event);
        }
        Ok(())
    }
}
