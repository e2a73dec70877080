// Role assignments on the source account (the data lake being backed up), which usually
// lives in another resource group or subscription: deployed there by main.bicep.

@description('Name of the existing source storage account.')
param accountName string

@description('[{ principalId, role }: role is a role definition name (GUID)]')
param grants array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: accountName
}

resource roles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for grant in grants: {
    scope: account
    name: guid(account.id, grant.principalId, grant.role)
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    }
  }
]
