"""What each role may do in the control app (gathered by facility.roles.sync_roles).

Every role reads (facility.roles gives `control.view_*`). Operators propose changes and run policies;
approvers approve or deny (and may cancel); admins get every control permission, autonomy included.
Audit entries have only a view permission: nobody, admin included, can change or delete them.
"""

ROLE_PERMISSIONS = {
    "operator": ["control.add_setpointchange", "control.run_policy"],
    "approver": ["control.approve_setpointchange"],
    "admin": ["control.*"],
}
