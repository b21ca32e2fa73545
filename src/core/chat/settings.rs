//! Notification settings: per conversation (mute) and per user.

use super::*;

impl Chat {
    /// # Switch push notifications for one conversation (members only)
    /// A mute may end at `until` (in the future; only with `enabled` false).
    pub async fn set_notifications(
        &self,
        user: &User,
        id: &str,
        enabled: bool,
        until: Option<Timestamp>,
    ) -> Result<(), ChatError> {
        if let Some(until) = until {
            if enabled {
                return Err(ChatError::invalid("until goes with enabled: false (a mute that ends)"));
            }
            if until <= Timestamp::now() {
                return Err(ChatError::invalid("until must be in the future"));
            }
        }
        self.require_member(id, user).await?;
        if !self.store.set_notifications(id, &user.id, enabled, until).await? {
            return Err(ChatError::NotAMember);
        }
        Ok(())
    }

    /// # Archive a conversation for the caller, or bring it back (members only)
    /// An archived conversation leaves the caller's default list until a new message comes
    /// (unless they muted it) or they bring it back.
    pub async fn set_archived(&self, user: &User, id: &str, archived: bool) -> Result<(), ChatError> {
        self.require_member(id, user).await?;
        if !self.store.set_archived(id, &user.id, archived).await? {
            return Err(ChatError::NotAMember);
        }
        Ok(())
    }

    /// # The caller's push notification settings
    pub async fn notification_settings(&self, user: &User) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.notification_settings(&user.id).await?)
    }

    /// # Change the caller's push notification settings
    /// Fields left out keep their value; returns the settings now in force.
    pub async fn update_notification_settings(
        &self,
        user: &User,
        update: NotificationSettingsUpdate,
    ) -> Result<NotificationSettings, ChatError> {
        Ok(self.store.update_notification_settings(&user.id, update).await?)
    }
}
