# Written by orbit-packager. Run by the MSI (custom action CA_WriteSecret) as LocalSystem:
# writes the enroll secret (MSI property FLEET_SECRET) to secret.txt next to this script,
# readable only by SYSTEM and Administrators.
# The secret is taken verbatim from the raw command line after the " FLEETSECRET:" marker, so no
# quoting, escaping or argument parsing can alter it or inject anything.
$ErrorActionPreference = 'Stop'
$marker = ' FLEETSECRET:'
$line = [Environment]::CommandLine
$at = $line.IndexOf($marker)
if ($at -lt 0) { exit 1 }
$secret = $line.Substring($at + $marker.Length)
if ($secret -eq '' -or $secret -eq 'dummy') { exit 0 }   # config-less MSI: keep what is there
$path = Join-Path $PSScriptRoot 'secret.txt'
[IO.File]::WriteAllText($path, $secret, (New-Object Text.UTF8Encoding $false))
$acl = New-Object Security.AccessControl.FileSecurity
$acl.SetAccessRuleProtection($true, $false)
foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
  $who = New-Object Security.Principal.SecurityIdentifier $sid
  $rule = New-Object Security.AccessControl.FileSystemAccessRule $who, 'FullControl', 'Allow'
  $acl.AddAccessRule($rule)
}
Set-Acl -LiteralPath $path -AclObject $acl
